"""KV-cache policies: what a softmax-attention layer keeps of its keys and values when memory is
bounded, the question of StreamingLLM, H2O, SnapKV, KVQuant and their kin.

A policy manages one ``KVCache`` per attention layer during streaming inference
(``Backbone.stream(x, policy=...)``). Each step appends the token's key, value and query, the
query attends to the cache, the policy ``observe``s the weights it gave (H2O accumulates them,
TOVA keeps the last ones), and then, in ``streaming`` mode, the policy ``compress``es the
cache to its budget. In ``once`` mode the context is read with the whole cache and compressed
once before each answer, query-agnostic, as SnapKV compresses a prompt before decoding.

Eviction policies only say which entries matter (``priority``, higher is kept); ``evict`` keeps
the top ones, by token or by whole example (an x never without its y). Entries keep their
positions: rotary keys are stored rotated, ALiBi reads ``positions``, so eviction never shifts
a kept key's place. Policies that change entries rather than drop them (quantize, merge)
override ``compress``.

Budgets count entries per head and layer. Between steps a cache holds at most its budget; a step
attends to those and its own key. ``floats()`` is the memory it holds per sequence, counted from
its tensors (stored bits / 32 for quantized entries, their scales included).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from iclab.errors import ConfigError
from iclab.registry import Registry
from iclab.specs import Spec, resolve_spec, spec_type

Mode = Literal["streaming", "once"]


@dataclass(frozen=True)
class KVCache:
    """One attention layer's memory under a policy: per (sequence, head), ``n`` entries in the
    order of their positions."""

    keys: Tensor  # (B, H, n, Dh), rotated when the layer uses rotary phases
    values: Tensor  # (B, H, n, Dh)
    positions: Tensor  # (B, H, n) long: the token each entry came from (the first, if merged)
    counts: Tensor  # (B, H, n): tokens an entry stands for (merged entries more than 1)
    scores: Tensor  # (B, H, n): the policy's running statistic (H2O's accumulated attention)
    queries: Tensor  # (B, H, w, Dh): the last w queries, for observation windows (SnapKV)
    length: int  # tokens read so far: the next token's position
    budget: int | None  # entries this layer may keep per head; None: all
    group: int  # tokens per example: the unit of example-wise eviction
    policy: Any = field(default=None, repr=False)  # the CachePolicy that manages it
    quantized: int = 0  # entries [0, quantized) are stored at the policy's bits
    window: Tensor | None = None  # (B, E, k − 1): a short convolution's last inputs, kept whole

    @staticmethod
    def empty(
        batch: int,
        n_heads: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
        budget: int | None,
        group: int,
        policy: CachePolicy | None = None,
    ) -> KVCache:
        entries = torch.zeros(batch, n_heads, 0, head_dim, device=device, dtype=dtype)
        per_entry = torch.zeros(batch, n_heads, 0, device=device)
        return KVCache(
            entries,
            entries,
            per_entry.long(),
            per_entry,
            per_entry,
            entries,
            length=0,
            budget=budget,
            group=group,
            policy=policy,
        )

    @property
    def size(self) -> int:
        """Entries per (sequence, head)."""
        return self.keys.shape[2]

    def append(self, key: Tensor, value: Tensor, query: Tensor) -> KVCache:
        """The cache with the next token's key, value (B, H, 1, Dh) and, when the policy keeps
        an observation window of queries, its query."""
        window = self.policy.window if self.policy is not None else 0
        batch, heads = key.shape[:2]
        position = torch.full((batch, heads, 1), self.length, device=key.device)
        queries = self.queries
        if window:
            queries = torch.cat((queries, query), dim=2)[:, :, -window:]
        return replace(
            self,
            keys=torch.cat((self.keys, key), dim=2),
            values=torch.cat((self.values, value), dim=2),
            positions=torch.cat((self.positions, position), dim=2),
            counts=torch.cat((self.counts, torch.ones_like(position, dtype=torch.float32)), 2),
            scores=torch.cat((self.scores, torch.zeros_like(position, dtype=torch.float32)), 2),
            queries=queries,
            length=self.length + 1,
        )

    def keep(self, index: Tensor) -> KVCache:
        """Only the entries at ``index`` (B, H, m), which must be in ascending order."""
        wide = index[..., None].expand(-1, -1, -1, self.keys.shape[-1])
        return replace(
            self,
            keys=self.keys.gather(2, wide),
            values=self.values.gather(2, wide),
            positions=self.positions.gather(2, index),
            counts=self.counts.gather(2, index),
            scores=self.scores.gather(2, index),
        )

    def floats(self, bits: int = 32, overhead: int = 0) -> float:
        """Floats held per sequence: every entry's key and value, those quantized at ``bits``
        plus ``overhead`` floats of scales each, and the convolution's window."""
        heads, head_dim = self.keys.shape[1], self.keys.shape[3]
        full = self.size - self.quantized
        stored = full * 2 * head_dim + self.quantized * (2 * head_dim * bits / 32 + overhead)
        window = 0 if self.window is None else self.window[0].numel()
        return float(heads * stored + window)


class PolicyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class EvictionOptions(PolicyOptions):
    budget: int = Field(64, ge=1, description="entries kept per head and layer")
    mode: Mode = Field(
        "streaming",
        description="streaming: evict as tokens arrive; once: read the context with the whole "
        "cache, compress it once before each answer (query-agnostic)",
    )
    unit: Literal["token", "example"] = Field(
        "token",
        description="token: evict single tokens; example: evict whole examples (an x is never "
        "kept without its y)",
    )


class CachePolicy:
    """A rule for what an attention layer keeps. Subclasses set ``Options`` and ``priority``
    (eviction) or override ``compress``; ``observe`` updates a running statistic."""

    name: ClassVar[str] = "unregistered"  # set by @register_policy
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions
    paper: ClassVar[str] = ""
    window: int = 0  # queries the cache keeps for the policy (an observation window)

    def __init__(self, options: PolicyOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @property
    def spec(self) -> str:
        """The canonical spec, the policy's name in tables and plots."""
        return str(Spec(type(self), self.options))

    @property
    def mode(self) -> Mode:
        return getattr(self.options, "mode", "streaming")

    def layer_budget(self, layer: int, n_layers: int) -> int | None:
        """Entries layer ``layer`` may keep per head (None: all); the same for every layer
        unless the policy spreads its budget (PyramidKV)."""
        return getattr(self.options, "budget", None)

    def bits(self) -> tuple[int, int]:
        """Bits per stored float of quantized entries and floats of scales per entry."""
        return 32, 0

    def new_cache(
        self,
        batch: int,
        n_heads: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
        layer: int,
        n_layers: int,
        group: int,
    ) -> KVCache:
        budget = self.layer_budget(layer, n_layers)
        by_example = getattr(self.options, "unit", "token") == "example"
        if by_example and budget is not None and budget < 2 * group:
            raise ConfigError(
                f"cache policy {self.spec}: unit=example needs a budget of at least two "
                f"examples ({2 * group} tokens) in every layer, got {budget} in layer {layer}"
            )
        return KVCache.empty(batch, n_heads, head_dim, device, dtype, budget, group, self)

    def observe(self, cache: KVCache, weights: Tensor) -> KVCache:
        """The cache after its newest query gave ``weights`` (B, H, n) to its entries."""
        return cache

    def priority(self, cache: KVCache) -> Tensor:
        """(B, H, n): how much each entry is worth keeping; the highest are kept."""
        raise NotImplementedError

    def compress(self, cache: KVCache) -> KVCache:
        """The cache within its budget: by default the entries of highest priority."""
        if cache.budget is None or cache.size <= cache.budget:
            return cache
        unit = getattr(self.options, "unit", "token")
        return evict(
            cache, self.priority(cache), cache.budget, cache.group if unit == "example" else 1
        )

    def after_step(self, cache: KVCache, weights: Tensor) -> KVCache:
        """Observe the step's attention, and compress now in streaming mode."""
        cache = self.observe(cache, weights)
        return self.compress(cache) if self.mode == "streaming" else cache

    def floats(self, cache: KVCache) -> float:
        return cache.floats(*self.bits())


def evict(cache: KVCache, priority: Tensor, budget: int, group: int = 1) -> KVCache:
    """Keep the ``budget`` entries of highest ``priority`` (B, H, n), or with ``group`` > 1 the
    newest, possibly unfinished, example and the whole earlier examples of highest total
    priority that fit the budget."""
    if group == 1:
        index = priority.topk(budget, dim=2).indices
        return cache.keep(index.sort(dim=2).values)
    # Entries are in position order and every example but the newest is whole (only whole
    # examples are evicted), so the earlier entries reshape into examples.
    newest = cache.length - 1 - (cache.length - 1) % group
    tail = int((cache.positions[0, 0] >= newest).sum())
    whole = (cache.size - tail) // group
    batch, heads = priority.shape[:2]
    totals = priority[:, :, : whole * group].reshape(batch, heads, whole, group).sum(-1)
    kept = totals.topk(min(whole, (budget - tail) // group), dim=2).indices.sort(dim=2).values
    index = (kept[..., None] * group + torch.arange(group, device=kept.device)).flatten(2)
    tail_index = torch.arange(whole * group, cache.size, device=kept.device)
    index = torch.cat((index, tail_index.expand(batch, heads, -1)), dim=2)
    return cache.keep(index)


POLICIES: Registry[type[CachePolicy]] = Registry("cache policy")
register_policy = POLICIES.register


POLICY_SPEC = spec_type(POLICIES, "cache policy")  # a config field holding a policy spec


def build_policy(text: str | Spec) -> CachePolicy:
    """``"snapkv(budget=64)"`` → the policy; errors name the spec and what is allowed."""
    cls, options = resolve_spec(text, POLICIES, what="cache policy")
    return cls(options)
