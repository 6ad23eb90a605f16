"""Policies that keep every token but store less per token: quantized entries (KVQuant, KIVI)
and merged similar entries (KVMerger)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from iclab.models.caches.base import (
    CachePolicy,
    EvictionOptions,
    KVCache,
    Mode,
    PolicyOptions,
    register_policy,
)


class QuantizeOptions(PolicyOptions):
    bits: Literal[2, 4, 8] = Field(8, description="bits per stored key and value coordinate")
    axis: Literal["token", "channel"] = Field(
        "token",
        description="token: one scale per token and head (each entry on arrival); channel: one "
        "scale per channel over a group of tokens, the newest kept in full precision until "
        "their group is complete (KIVI's key quantization)",
    )
    group: int = Field(16, ge=2, description="tokens per group of channel-wise scales")
    mode: Mode = Field("streaming", description="streaming: as tokens arrive; once: at answers")


def fake_quantize(x: Tensor, bits: int, dim: int) -> Tensor:
    """``x`` rounded to 2^bits evenly spaced levels between its min and max along ``dim``
    (asymmetric quantization), returned dequantized: off by at most half a level."""
    low, high = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
    scale = ((high - low) / (2**bits - 1)).clamp(min=torch.finfo(x.dtype).tiny)
    return ((x - low) / scale).round() * scale + low


@register_policy("quantize")
class Quantize(CachePolicy):
    """Every entry, its key and value stored at ``bits`` bits per coordinate with min-max scales
    per token or per channel group."""

    Options = QuantizeOptions
    paper = "KVQuant, Hooper et al. 2024 (2401.18079); KIVI, Liu et al. 2024 (2402.02750)"

    def bits(self) -> tuple[int, int]:
        """Stored bits, and the scale and offset of key and value: per entry (token axis) or
        per channel shared by a group (channel axis)."""
        options = self.options
        return options.bits, 4 if options.axis == "token" else 0

    def floats(self, cache: KVCache) -> float:
        floats = cache.floats(*self.bits())
        if self.options.axis == "channel":  # a scale and offset per channel, key and value
            heads, head_dim = cache.keys.shape[1], cache.keys.shape[3]
            floats += heads * (cache.quantized // self.options.group) * 4 * head_dim
        return floats

    def compress(self, cache: KVCache) -> KVCache:
        if self.options.axis == "token":
            end, dim = cache.size, -1
        else:
            end = (
                cache.quantized
                + (cache.size - cache.quantized) // self.options.group * self.options.group
            )
            dim = -2
        if end == cache.quantized:
            return cache
        keys, values = cache.keys.clone(), cache.values.clone()
        for stored in (keys, values):
            fresh = stored[:, :, cache.quantized : end]
            if dim == -2:  # per channel within each group of tokens
                grouped = fresh.unflatten(2, (-1, self.options.group))
                fresh = fake_quantize(grouped, self.options.bits, -2).flatten(2, 3)
            else:
                fresh = fake_quantize(fresh, self.options.bits, -1)
            stored[:, :, cache.quantized : end] = fresh
        return replace(cache, keys=keys, values=values, quantized=end)


class MergeOptions(EvictionOptions):
    unit: Literal["token"] = Field("token", description="entries merge one token at a time")


@register_policy("merge")
class Merge(CachePolicy):
    """Over budget, the two neighbouring entries whose keys are most alike (cosine) become one:
    their count-weighted mean key and value, attended as if it were their count of tokens."""

    Options = MergeOptions
    paper = "KVMerger, Wang et al. 2024 (2407.08454)"

    def compress(self, cache: KVCache) -> KVCache:
        while cache.budget is not None and cache.size > cache.budget:
            cache = merge_most_similar(cache)
        return cache


def merge_most_similar(cache: KVCache) -> KVCache:
    """The cache with its most similar pair of neighbouring entries merged, per (sequence,
    head): one entry fewer."""
    keys, values, counts = cache.keys, cache.values, cache.counts
    unit = torch.nn.functional.normalize(keys.float(), dim=-1)
    similarity = (unit[:, :, :-1] * unit[:, :, 1:]).sum(-1)  # (B, H, n - 1)
    first = similarity.argmax(dim=2, keepdim=True)  # merge entries first and first + 1
    pair_counts = torch.cat((counts.gather(2, first), counts.gather(2, first + 1)), dim=2)

    weights = pair_counts / pair_counts.sum(2, keepdim=True)  # (B, H, 2)

    def pair_mean(entries: Tensor) -> Tensor:
        pair = torch.cat((gather_entries(entries, first), gather_entries(entries, first + 1)), 2)
        return (pair * weights[..., None].to(entries.dtype)).sum(2, keepdim=True)

    merged_key, merged_value = pair_mean(keys), pair_mean(values)
    # Every entry but first + 1, in order; then the merged one written at first.
    index = torch.arange(cache.size - 1, device=keys.device).expand_as(similarity)
    index = index + (index > first).long()
    kept = cache.keep(index)
    wide = first[..., None].expand(-1, -1, -1, keys.shape[-1])
    return replace(
        kept,
        keys=kept.keys.scatter(2, wide, merged_key),
        values=kept.values.scatter(2, wide, merged_value),
        counts=kept.counts.scatter(2, first, pair_counts.sum(2, keepdim=True)),
        scores=kept.scores.scatter(2, first, cache.scores.gather(2, first + 1)),
    )


def gather_entries(entries: Tensor, index: Tensor) -> Tensor:
    """``entries`` (B, H, n, D) at ``index`` (B, H, m) → (B, H, m, D)."""
    return entries.gather(2, index[..., None].expand(-1, -1, -1, entries.shape[-1]))
