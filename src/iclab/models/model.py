"""A trainable in-context learner: codec + backbone, with the ``InContextLearner`` interface."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from iclab.config import ModelConfig, TaskConfig
from iclab.episode import Episode
from iclab.models.backbone import Backbone
from iclab.models.codec import Codec, codec_for


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

    def forward(self, episode: Episode) -> Tensor:
        tokens = self.codec.encode(episode.inputs, episode.targets)
        return self.codec.decode(self.backbone(tokens))

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
            tokens = self.codec.encode(episode.inputs, episode.targets)
            return self.codec.decode(self.backbone.stream(tokens))
        finally:
            self.train(was_training)

    def hidden_states(self, episode: Episode) -> list[Tensor]:
        """The residual stream of the prompt's tokens before the first block and after each
        block: n_layers + 1 tensors (B, T, E)."""
        return self.backbone.hidden_states(self.codec.encode(episode.inputs, episode.targets))

    def read_out(self, hidden: Tensor) -> Tensor:
        """The prediction the model would make from a residual stream (B, T, E), e.g. an
        intermediate layer's (final norm and codec read-out applied, as to the last layer's)."""
        return self.codec.decode(self.backbone.ln_final(hidden))

    def attention_maps(self, episode: Episode) -> dict[int, Tensor]:
        """Attention weights (B, H, T, T) of every softmax-attention layer, by layer index."""
        hidden = self.hidden_states(episode)
        return {
            index: block.mixer.attention_weights(block.ln_mixer(hidden[index]))
            for index, block in enumerate(self.backbone.blocks)
            if hasattr(block.mixer, "attention_weights")
        }

    def n_params(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())


def build_model(model: ModelConfig, task: TaskConfig, name: str = "model") -> InContextModel:
    """The model a config describes, sized for the task's inputs, outputs and prompt length
    (and, with ``model.target_params``, for a parameter budget: see ``fit_width``)."""
    if model.target_params is not None:
        model = model.model_copy(update={"d_model": fit_width(model, task)})
    codec = codec_for(task.build(), model.d_model, model.tokens)
    backbone = Backbone(
        layers=model.layer_specs,
        d_model=model.d_model,
        n_heads=model.n_heads,
        n_positions=codec.tokens_per_example * task.n_points,
        mlp_ratio=model.mlp_ratio,
        norm=model.norm,
        dropout=model.dropout,
    )
    return InContextModel(codec, backbone, name=name)


PARAMETER_TOLERANCE = 0.05


def count_params(model: ModelConfig, task: TaskConfig, d_model: int) -> int:
    """Parameters of the model at width ``d_model``, counted on the meta device (no memory)."""
    sized = model.model_copy(update={"d_model": d_model, "target_params": None})
    with torch.device("meta"):
        return build_model(sized, task).n_params()


def fit_width(model: ModelConfig, task: TaskConfig) -> int:
    """The width (a multiple of what the mixers need) whose parameter count is nearest
    ``model.target_params``; a ValueError when even that is more than 5% away."""
    target, multiple = model.target_params, model.width_multiple()

    @functools.cache
    def params_at(j: int) -> int:  # parameters at width j · multiple
        return count_params(model, task, j * multiple)

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
        raise ValueError(
            f"model.target_params={target:,}: the nearest width d_model={width} gives "
            f"{n_params:,} parameters, more than 5% away (widths step by {multiple}); "
            "change the budget, n_layers or n_heads"
        )
    return width
