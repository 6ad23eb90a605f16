"""A trainable in-context learner: codec + backbone, with the ``InContextLearner`` interface.

A model is built from its own options (``ModelConfig``) and what the task tells it about its
examples (``TaskIO``), nothing else: this package knows neither tasks nor run configs.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.kinds import Codec, SetTokens, TaskIO, kind_of
from iclab.models.backbone import Backbone
from iclab.models.config import ModelConfig


class PromptTooLongError(ConfigError):
    """Prompts longer than a model's learned position table covers."""


class InContextModel(nn.Module):
    """Maps an episode to a prediction at every position in one causal forward pass."""

    def __init__(
        self, codec: Codec, backbone: Backbone, name: str = "model", streaming: bool = False
    ) -> None:
        super().__init__()
        self.codec = codec
        self.backbone = backbone
        self.name = name
        self.streaming = streaming  # the default of predict(streaming=...)

    @property
    def max_points(self) -> int | None:
        """The most examples a prompt may have (the learned positions' reach); None: any."""
        length = self.backbone.max_length
        return None if length is None else length // self.codec.tokens_per_example

    def check_points(self, n_points: int) -> None:
        """A clear error when prompts of ``n_points`` examples are longer than the model reads:
        the one length check, made before every pass and by evaluation before it starts."""
        if self.max_points is not None and n_points > self.max_points:
            raise PromptTooLongError(
                f"prompts of {n_points} examples are longer than this model can read: its "
                f"learned position table covers {self.max_points} examples, the prompts it was "
                "built for. Mixers that continue past their training length: "
                "softmax(positions=rotary|alibi|none) and the recurrent ones (iclab models)"
            )

    def encode(self, episode: Episode) -> Tensor:
        """The prompt as the backbone's input tokens (B, T, E), after the length check."""
        self.check_points(episode.n_points)
        return kind_of(episode.kind).encode(self.codec, episode)

    def visible(self, length: int, device: torch.device) -> Tensor | None:
        """Which of ``length`` tokens later tokens may attend to, for set-style codecs whose
        queries are private; None (all of them) for the others."""
        if isinstance(self.codec, SetTokens):
            return self.codec.visible(length, device)
        return None

    def forward(self, episode: Episode) -> Tensor:
        tokens = self.encode(episode)
        visible = self.visible(tokens.shape[1], tokens.device)
        return self.codec.decode(self.backbone(tokens, visible))

    @torch.no_grad()
    def predict(self, episode: Episode, streaming: bool | None = None) -> Tensor:
        """Predictions in eval mode; ``streaming`` runs the backbone token by token through
        each mixer's recurrent form (a KV cache for softmax attention): the same numbers, with
        memory flat in the context length for recurrent mixers."""
        was_training = self.training
        self.eval()
        try:
            if not (self.streaming if streaming is None else streaming):
                return self(episode)
            tokens = self.encode(episode)
            visible = self.visible(tokens.shape[1], tokens.device)
            return self.codec.decode(self.backbone.stream(tokens, visible))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def predict_queries(
        self, context_inputs: Tensor, context_targets: Tensor, queries: Tensor
    ) -> Tensor:
        """Predictions for ``queries`` (B, m, d), each from the context (B, k, d), (B, k) only,
        as if each query were the only one: (B, m) values or (B, m, C) scores.

        A set-style codec answers every query in one pass (the context's pair tokens, then the
        private query tokens); other codecs run one prompt per query, context then query."""
        was_training = self.training
        self.eval()
        try:
            n_context, n_queries = context_inputs.shape[1], queries.shape[1]
            if isinstance(self.codec, SetTokens):
                tokens = torch.cat(
                    (
                        self.codec.pair_tokens(context_inputs, context_targets),
                        self.codec.query_tokens(queries),
                    ),
                    dim=1,
                )
                visible = torch.arange(n_context + n_queries, device=tokens.device) < n_context
                return self.codec.read_queries(self.backbone(tokens, visible)[:, n_context:])
            batch = queries.shape[0]
            inputs = torch.cat(
                (context_inputs[:, None].expand(-1, n_queries, -1, -1), queries[:, :, None]), 2
            ).flatten(0, 1)  # (B·m, k + 1, d): one prompt per query
            targets = torch.cat(
                (
                    context_targets[:, None].expand(-1, n_queries, -1),
                    torch.zeros_like(context_targets[:, :1, None]).expand(-1, n_queries, 1),
                ),
                dim=2,
            ).flatten(0, 1)  # the query's target is a placeholder, never read
            kind = "regression" if torch.is_floating_point(targets) else "classification"
            scores = self.predict(Episode(inputs, targets, kind))[:, -1]
            return scores.reshape(batch, n_queries, *scores.shape[1:])
        finally:
            self.train(was_training)

    def hidden_states(self, episode: Episode) -> list[Tensor]:
        """The residual stream of the prompt's tokens before the first block and after each
        block: n_layers + 1 tensors (B, T, E)."""
        tokens = self.encode(episode)
        return self.backbone.hidden_states(tokens, self.visible(tokens.shape[1], tokens.device))

    def read_out(self, hidden: Tensor) -> Tensor:
        """The prediction the model would make from a residual stream (B, T, E), e.g. an
        intermediate layer's (final norm and codec read-out applied, as to the last layer's)."""
        return self.codec.decode(self.backbone.ln_final(hidden))

    def attention_maps(self, episode: Episode) -> dict[int, Tensor]:
        """Attention weights (B, H, T, T) of every softmax-attention layer, by layer index."""
        hidden = self.hidden_states(episode)
        visible = self.visible(hidden[0].shape[1], hidden[0].device)
        return {
            index: block.mixer.attention_weights(block.ln_mixer(hidden[index]), visible)
            for index, block in enumerate(self.backbone.blocks)
            if hasattr(block.mixer, "attention_weights")
        }

    def n_params(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def state_size(self, n_points: int) -> int:
        """Floats every mixer carries per sequence after a prompt of ``n_points`` examples (the
        KV cache of attention, the fixed state of recurrent mixers), summed over the layers."""
        length = n_points * self.codec.tokens_per_example
        return sum(block.mixer.state_size(length) for block in self.backbone.blocks)

    def state_per_layer(self, n_points: int) -> float:
        """``state_size`` averaged over the layers: what memory budgets are compared on."""
        return self.state_size(n_points) / len(self.backbone.blocks)


def build_model(
    config: ModelConfig, io: TaskIO, n_points: int, name: str = "model"
) -> InContextModel:
    """The model ``config`` describes for a task's examples (``io``) and prompts of up to
    ``n_points`` examples (what a learned position table covers); with
    ``config.target_params``, at the width that meets the parameter budget (``fit_width``)."""
    if config.target_params is not None:
        config = config.model_copy(update={"d_model": fit_width(config, io, n_points)})
    codec = kind_of(io.kind).build_codec(io, config.d_model, config.tokens)
    backbone = Backbone(
        layers=config.layer_specs,
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_positions=codec.tokens_per_example * n_points,
        mlp_ratio=config.mlp_ratio,
        norm=config.norm,
        dropout=config.dropout,
        init_std=config.init_std,
    )
    return InContextModel(codec, backbone, name=name)


PARAMETER_TOLERANCE = 0.05


def count_params(config: ModelConfig, io: TaskIO, n_points: int, d_model: int) -> int:
    """Parameters of the model at width ``d_model``, counted on the meta device (no memory)."""
    sized = config.model_copy(update={"d_model": d_model, "target_params": None})
    with torch.device("meta"):
        return build_model(sized, io, n_points).n_params()


def fit_width(config: ModelConfig, io: TaskIO, n_points: int) -> int:
    """The width (a multiple of what the mixers need) whose parameter count is nearest
    ``config.target_params``; a ConfigError when even that is more than 5% away."""
    target, multiple = config.target_params, config.width_multiple()

    @functools.cache
    def params_at(j: int) -> int:  # parameters at width j · multiple
        return count_params(config, io, n_points, j * multiple)

    low = max(1, -(-8 // multiple))  # widths are at least 8
    if params_at(low) >= target:
        best = low
    else:
        high = low * 2
        while params_at(high) < target:
            low, high = high, high * 2
        while high - low > 1:  # parameter counts grow with width
            middle = (low + high) // 2
            if params_at(middle) < target:
                low = middle
            else:
                high = middle
        best = min(low, high, key=lambda j: abs(params_at(j) - target))
    width, n_params = best * multiple, params_at(best)
    if abs(n_params - target) > PARAMETER_TOLERANCE * target:
        raise ConfigError(
            f"model.target_params={target:,}: the nearest width d_model={width} gives "
            f"{n_params:,} parameters, more than 5% away (widths step by {multiple}); "
            "change the budget, n_layers or n_heads"
        )
    return width
