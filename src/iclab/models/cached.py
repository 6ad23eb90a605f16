"""A trained model answering through a KV-cache policy: a learner of its own, so that every
policy is evaluated beside the full cache and the algorithms on the same prompts."""

from __future__ import annotations

import torch
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.models.caches import CachePolicy, KVCache
from iclab.models.model import InContextModel


class CachedModel:
    """``model`` run token by token with its softmax layers' caches kept by ``policy``; named
    ``model[policy]``. While it predicts it measures what the caches hold: ``peak_floats`` (the
    most floats per sequence each layer held for an answer) and ``kept`` (per softmax layer,
    how many of its caches, over sequences and heads, held each position at the end)."""

    def __init__(self, model: InContextModel, policy: CachePolicy) -> None:
        if not any(block.mixer.has_kv_cache for block in model.backbone.blocks):
            raise ConfigError(
                f"cache policy {policy.spec}: {model.name} has no softmax-attention layer, so no "
                "KV cache to manage (its recurrent state is fixed; iclab longctx compares it as "
                "it is)"
            )
        self.model = model
        self.policy = policy
        self.name = f"{model.name}[{policy.spec}]"
        self.peak_floats = [0.0] * len(model.backbone.blocks)
        self.kept: dict[int, Tensor] = {}
        self.caches: dict[int, int] = {}

    @property
    def floats_per_layer(self) -> float:
        """The mean over layers of the most floats per sequence a layer held for an answer."""
        return sum(self.peak_floats) / len(self.peak_floats)

    @torch.no_grad()
    def predict(self, episode: Episode) -> Tensor:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            tokens = model.encode(episode)
            visible = model.visible(tokens.shape[1], tokens.device)
            hidden, states, peaks = model.backbone.stream_states(
                tokens, visible, self.policy, model.codec.tokens_per_example
            )
        finally:
            model.train(was_training)
        self.peak_floats = [max(pair) for pair in zip(self.peak_floats, peaks, strict=True)]
        for layer, state in enumerate(states):
            if isinstance(state, KVCache):
                self._count_kept(layer, state, tokens.shape[1])
        return model.codec.decode(hidden)

    def _count_kept(self, layer: int, cache: KVCache, length: int) -> None:
        """Add which positions the layer's caches held at the end of prompts of ``length``
        tokens (counts of another length are started again)."""
        counts = torch.bincount(cache.positions.flatten().cpu(), minlength=length)[:length]
        caches = cache.positions.shape[0] * cache.positions.shape[1]  # sequences × heads
        if layer in self.kept and self.kept[layer].shape[0] == length:
            counts, caches = counts + self.kept[layer], caches + self.caches[layer]
        self.kept[layer], self.caches[layer] = counts, caches

    def kept_share(self) -> dict[int, Tensor]:
        """Per softmax layer, the share of its caches that held each position at the end of
        the prompts (1 everywhere for the full cache)."""
        return {layer: counts.double() / self.caches[layer] for layer, counts in self.kept.items()}
