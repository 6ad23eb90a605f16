"""Eviction policies: which keys and values an attention layer keeps, after the papers that
proposed each rule (names and defaults as in NVIDIA's kvpress where it has them)."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from iclab.models.caches.base import (
    CachePolicy,
    EvictionOptions,
    KVCache,
    Mode,
    register_policy,
)


@register_policy("full")
class Full(CachePolicy):
    """Every key and value, the cache streaming inference holds without a policy."""

    paper = "the unbounded KV cache"


@register_policy("window")
class Window(CachePolicy):
    """The most recent tokens only (a sliding window)."""

    Options = EvictionOptions
    paper = "sliding-window attention (Beltagy et al. 2020, 2004.05150)"

    def priority(self, cache: KVCache) -> Tensor:
        return cache.positions.float()


class SinkWindowOptions(EvictionOptions):
    sinks: int = Field(4, ge=0, description="first tokens always kept (attention sinks)")


@register_policy("sink_window")
class SinkWindow(CachePolicy):
    """The first ``sinks`` tokens and the most recent ones (StreamingLLM)."""

    Options = SinkWindowOptions
    paper = "StreamingLLM, Xiao et al. 2023 (2309.17453)"

    def priority(self, cache: KVCache) -> Tensor:
        positions = cache.positions.float()
        return positions.masked_fill(cache.positions < self.options.sinks, float("inf"))


class HeavyHitterOptions(EvictionOptions):
    recent: float = Field(
        0.5, ge=0.0, le=1.0, description="share of the budget kept for the most recent tokens"
    )


@register_policy("h2o")
class HeavyHitters(CachePolicy):
    """The tokens that received the most attention so far (heavy hitters), plus a recent
    window."""

    Options = HeavyHitterOptions
    paper = "H2O, Zhang et al. 2023 (2306.14048)"

    def observe(self, cache: KVCache, weights: Tensor) -> KVCache:
        return replace(cache, scores=cache.scores + weights)

    def priority(self, cache: KVCache) -> Tensor:
        recent = round(self.options.recent * cache.budget)
        is_recent = cache.positions >= cache.length - recent
        return cache.scores.masked_fill(is_recent, float("inf"))


@register_policy("tova")
class TokenOmission(CachePolicy):
    """The tokens the newest query attends to most, its weights averaged over the heads (one
    choice for all heads, as TOVA makes it)."""

    Options = EvictionOptions
    paper = "TOVA, Oren et al. 2024 (2401.06104)"

    def observe(self, cache: KVCache, weights: Tensor) -> KVCache:
        shared = weights.mean(dim=1, keepdim=True).expand_as(weights)
        return replace(cache, scores=shared)

    def priority(self, cache: KVCache) -> Tensor:
        return cache.scores


class SnapOptions(EvictionOptions):
    mode: Mode = Field("once", description=EvictionOptions.model_fields["mode"].description)
    window: int = Field(8, ge=1, description="observation window: the last queries that vote")
    kernel: int = Field(5, ge=1, description="width of the average pooling of their votes")


@register_policy("snapkv")
class SnapKV(CachePolicy):
    """The keys the last ``window`` queries of the context attend to (pooled over neighbours),
    plus the window itself; compresses once after the context by default."""

    Options = SnapOptions
    paper = "SnapKV, Li et al. 2024 (2404.14469)"

    @property
    def window(self) -> int:  # type: ignore[override]
        return self.options.window

    def priority(self, cache: KVCache) -> Tensor:
        queries = cache.queries  # (B, H, w, Dh), the newest last
        w = queries.shape[2]
        scores = (queries @ cache.keys.transpose(-1, -2)).float() / queries.shape[-1] ** 0.5
        scores = scores + cache.counts.log()[:, :, None]
        query_positions = cache.length - w + torch.arange(w, device=queries.device)
        later = cache.positions[:, :, None] > query_positions[:, None]
        votes = scores.masked_fill(later, float("-inf")).softmax(-1).sum(2)  # (B, H, n)
        kernel = self.options.kernel
        pooled = F.avg_pool1d(votes.flatten(0, 1)[:, None], kernel, 1, kernel // 2)[:, 0]
        pooled = pooled[:, : votes.shape[-1]].view_as(votes)
        return pooled.masked_fill(cache.positions >= cache.length - w, float("inf"))


class PyramidOptions(SnapOptions):
    spread: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="the first layer keeps budget·(1 + spread), the last budget·(1 − spread), "
        "linearly in between (the mean is the budget)",
    )


@register_policy("pyramidkv")
class PyramidKV(SnapKV):
    """SnapKV's choice with budgets shrinking from the first layer to the last, the mean
    budget unchanged (lower layers attend broadly, upper ones to few tokens)."""

    Options = PyramidOptions
    paper = "PyramidKV, Cai et al. 2024 (2406.02069)"

    def layer_budget(self, layer: int, n_layers: int) -> int | None:
        slope = 0.0 if n_layers == 1 else 1.0 - 2.0 * layer / (n_layers - 1)
        return max(1, round(self.options.budget * (1.0 + self.options.spread * slope)))


@register_policy("knorm")
class KeyNorm(CachePolicy):
    """The keys of smallest norm (which attract the most attention, Devoto et al.)."""

    Options = EvictionOptions
    paper = "Devoto et al. 2024 (2406.11430)"

    def priority(self, cache: KVCache) -> Tensor:
        return -cache.keys.float().norm(dim=-1)


class RandomOptions(EvictionOptions):
    seed: int = Field(0, description="seed of the random priorities")


@register_policy("random")
class RandomEviction(CachePolicy):
    """A uniformly random subset: each token draws a random priority when it arrives (the
    floor every informed policy should beat)."""

    Options = RandomOptions
    paper = "baseline"

    def new_cache(self, batch, n_heads, head_dim, device, dtype, layer, n_layers, group):
        if layer == 0:  # one stream of priorities per pass, the same for every pass
            self.generator = torch.Generator(device=device).manual_seed(self.options.seed)
        return super().new_cache(batch, n_heads, head_dim, device, dtype, layer, n_layers, group)

    def observe(self, cache: KVCache, weights: Tensor) -> KVCache:
        newest = cache.scores[:, :, -1:]
        fresh = torch.rand(newest.shape, generator=self.generator, device=newest.device)
        return replace(cache, scores=torch.cat((cache.scores[:, :, :-1], fresh), dim=2))

    def priority(self, cache: KVCache) -> Tensor:
        return cache.scores
