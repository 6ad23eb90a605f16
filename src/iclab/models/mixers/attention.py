"""Causal softmax self-attention, as in GPT-2, with a choice of position scheme."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from iclab.models.caches import KVCache
from iclab.models.mixers.base import Mixer, MixerOptions, MixerState, register_mixer
from iclab.models.mixers.conv import ShortConv


class SoftmaxOptions(MixerOptions):
    positions: Literal["learned", "rotary", "alibi", "none"] = Field(
        "learned",
        description="learned: a position table added at the input (GPT-2, Garg et al.; no "
        "longer prompts than trained); rotary: RoPE on queries and keys (Su et al. 2021); "
        "alibi: linear distance penalties per head (Press et al. 2021); none: NoPE, order "
        "from the causal mask alone (Kazemnejad et al. 2023)",
    )
    rotary_base: float = Field(10000.0, gt=1.0, description="RoPE frequency base")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on the attention weights in training"
    )
    short_conv: int = Field(
        0,
        ge=0,
        description="kernel size of a depthwise causal convolution on the input before q, k, v "
        "(0: none, GPT-2); 2 shows each token its predecessor, pairing y_i with x_i without "
        "a previous-token head: the quickstart learns in about half the steps with it; "
        "train.lr: auto is 3e-3 with it",
    )


@register_mixer("softmax")
class CausalSelfAttention(Mixer):
    """Multi-head causal softmax attention through fused ``scaled_dot_product_attention``.

    Streams with a KV cache: the state after t tokens holds every key and value, 2·E·t floats,
    and with ``short_conv`` the convolution's last inputs.
    """

    Options = SoftmaxOptions
    state_formula = "2·E·t (KV cache) (+E·(short_conv − 1))"
    paper = "Vaswani et al. 2017 (1706.03762); GPT-2, Radford et al. 2019"
    learning_rate = 2e-3
    # With a short convolution, chosen by time to ICL on the quickstart task: at 2e-3 one seed of
    # three stayed on the plateau past 100 s, at 3e-3 none (benchmarks/RESULTS.md)
    convolved_learning_rate = 3e-3
    has_kv_cache = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        options: SoftmaxOptions | None = None,
    ) -> None:
        super().__init__(d_model, n_heads, options)
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        size = self.options.short_conv
        self.short_conv = ShortConv(d_model, size) if size else None
        scheme = self.options.positions
        if scheme == "rotary":
            frequencies = self.options.rotary_base ** (
                -torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
            )
            self.register_buffer("rotary_frequencies", frequencies, persistent=False)
        if scheme == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(n_heads), persistent=False)

    @classmethod
    def tuned_learning_rate(cls, options: SoftmaxOptions) -> float:
        return cls.convolved_learning_rate if options.short_conv else cls.learning_rate

    @property
    def uses_learned_positions(self) -> bool:
        return self.options.positions == "learned"

    @classmethod
    def width_multiple(cls, n_heads: int, options: SoftmaxOptions) -> int:
        return 2 * n_heads if options.positions == "rotary" else n_heads

    @classmethod
    def supports_private_tokens(cls, options: SoftmaxOptions) -> bool:
        return options.positions == "none"

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, E) → q, k, v, each (B, H, T, E/H)."""
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def _merge(self, mixed: Tensor) -> Tensor:
        """(B, H, T, E/H) → (B, T, E), projected."""
        batch, _, length, _ = mixed.shape
        return self.proj(mixed.transpose(1, 2).reshape(batch, length, self.d_model))

    def forward(self, x: Tensor, visible: Tensor | None = None) -> Tensor:  # x: (B, T, E)
        """``visible`` (T,) bool, for set-style prompts: a token attends to the earlier
        visible tokens and to itself only."""
        q, k, v = self._queries_keys_values(x)
        dropout = self.options.dropout if self.training else 0.0
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # PyTorch's fused CPU kernel is 5× slower in bfloat16 than in float32 (its backward
            # most); the explicit form runs its two matmuls and its softmax in bfloat16 (the
            # softmax summing in float32), and is faster than either (benchmarks/RESULTS.md).
            weights = F.dropout(self._weights(q, k, visible), dropout, self.training)
            return self._merge(weights.to(v.dtype) @ v)
        if visible is not None:
            allowed = private_token_mask(visible)
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        elif self.options.positions == "alibi":
            positions = torch.arange(x.shape[1], device=x.device)
            bias = self._alibi_bias(positions, positions).to(q.dtype)  # (H, T, T), -inf above
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        else:
            mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self._merge(mixed)

    def attention_weights(self, x: Tensor, visible: Tensor | None = None) -> Tensor:
        """The softmax weights (B, H, T, T) the forward pass uses, computed explicitly (the fused
        kernel never forms them): for attention maps and head scores."""
        q, k, _ = self._queries_keys_values(x)
        return self._weights(q, k, visible)

    def _queries_keys_values(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v (B, H, T, E/H) of the (convolved) input, with rotary phases applied when
        the mixer uses them."""
        q, k, v = self._heads(x if self.short_conv is None else self.short_conv(x))
        if self.options.positions == "rotary":
            positions = torch.arange(x.shape[1], device=x.device)
            q, k = self._rotate(q, positions), self._rotate(k, positions)
        return q, k, v

    def _weights(self, q: Tensor, k: Tensor, visible: Tensor | None = None) -> Tensor:
        """Causal softmax weights (B, H, T, T), in q's dtype under the plain causal mask.

        That mask is exact in any dtype, so in bfloat16 the scores, the mask and the softmax stay
        bfloat16 (PyTorch's CPU softmax sums in float32 and rounds its output once), and
        backward saves those bfloat16 weights rather than a float32 copy as well: about 10 MB
        less peak memory on benchmarks/vs_reference.py's config, at the same speed. ALiBi's
        distances and set-style masks keep a float32 bias, which makes those weights float32.
        """
        length = q.shape[2]
        positions = torch.arange(length, device=q.device)
        if visible is not None:
            bias = torch.zeros(length, length, device=q.device).masked_fill(
                ~private_token_mask(visible), float("-inf")
            )
        elif self.options.positions == "alibi":
            bias = self._alibi_bias(positions, positions)
        else:
            bias = torch.full((length, length), float("-inf"), dtype=q.dtype, device=q.device)
            bias = bias.triu(1)
        # bias + scores / sqrt(head_dim) in one kernel: faster than dividing and masking the
        # (B, H, T, T) scores one op at a time (benchmarks/RESULTS.md)
        scores = torch.add(bias, q @ k.transpose(-1, -2), alpha=1 / math.sqrt(self.head_dim))
        return scores.softmax(-1)

    def _rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        """RoPE: rotate each pair (x_2i, x_2i+1) by angle position · base^(-2i/head_dim)."""
        angles = positions[:, None].float() * self.rotary_frequencies  # (T, head_dim/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)

    def _alibi_bias(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """−slope_h · (i − j) for keys j ≤ query i, −inf for later keys: (H, Tq, Tk)."""
        distance = (query_positions[:, None] - key_positions[None, :]).float()
        bias = -self.alibi_slopes[:, None, None] * distance
        return bias.masked_fill(distance < 0, float("-inf"))

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MixerState:
        """Keys, values, position (and the convolution's window of inputs)."""
        empty = torch.zeros(batch, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)
        if self.short_conv is None:
            return empty, empty, 0
        return empty, empty, 0, self.short_conv.init_state(batch, device, dtype)

    def with_window(self, cache: KVCache) -> KVCache:
        """A policy's empty cache for this layer, with the convolution's window riding along
        out of the policy's reach (the cache itself when there is no convolution)."""
        if self.short_conv is None:
            return cache
        keys = cache.keys
        window = self.short_conv.init_state(keys.shape[0], keys.device, keys.dtype)
        return replace(cache, window=window)

    def step(self, x: Tensor, state: MixerState | KVCache) -> tuple[Tensor, MixerState]:
        """The next token (B, E) after those in ``state``: the whole cache (keys, values,
        position[, window]), or a ``KVCache`` managed by a cache policy."""
        if isinstance(state, KVCache):
            return self._cached_step(x, state)
        keys, values, position, *window = state
        if self.short_conv is not None:
            x, window[0] = self.short_conv.step(x, window[0])
        q, k, v = self._heads(x[:, None])  # each (B, H, 1, E/H)
        at = torch.tensor([position], device=x.device)
        if self.options.positions == "rotary":
            q, k = self._rotate(q, at), self._rotate(k, at)
        keys, values = torch.cat((keys, k), dim=2), torch.cat((values, v), dim=2)
        bias = None
        if self.options.positions == "alibi":
            bias = self._alibi_bias(at, torch.arange(position + 1, device=x.device)).to(q.dtype)
        mixed = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
        return self._merge(mixed)[:, 0], (keys, values, position + 1, *window)

    def _cached_step(self, x: Tensor, cache: KVCache) -> tuple[Tensor, KVCache]:
        """Attention over what the policy kept, weights formed explicitly for it to observe;
        merged entries count as their number of tokens (+ log count on their scores)."""
        if self.short_conv is not None:
            x, window = self.short_conv.step(x, cache.window)
            cache = replace(cache, window=window)
        q, k, v = self._heads(x[:, None])
        if self.options.positions == "rotary":
            at = torch.tensor([cache.length], device=x.device)
            q, k = self._rotate(q, at), self._rotate(k, at)
        cache = cache.append(k, v, q)
        scores = (q @ cache.keys.transpose(-1, -2))[:, :, 0].float() / math.sqrt(self.head_dim)
        scores = scores + cache.counts.log()
        if self.options.positions == "alibi":
            distance = (cache.length - 1 - cache.positions).float()  # (B, H, n)
            scores = scores - self.alibi_slopes[:, None] * distance
        weights = scores.softmax(-1)  # (B, H, n)
        mixed = weights[:, :, None].to(cache.values.dtype) @ cache.values  # (B, H, 1, Dh)
        return self._merge(mixed)[:, 0], cache.policy.after_step(cache, weights)

    def state_size(self, length: int) -> int:
        window = 0 if self.short_conv is None else self.short_conv.state_size()
        return 2 * self.d_model * length + window

    def sequence_flops(self, length: int) -> float:
        """PaLM's count (Chowdhery et al. 2022, appendix B): 12·E·T per token for the T × T
        scores and their use, forward and backward, as if none were masked."""
        return 12.0 * self.d_model * length


def private_token_mask(visible: Tensor) -> Tensor:
    """(T, T) bool: query i may attend to key j when j ≤ i and j is visible, or j = i."""
    length = visible.shape[0]
    causal = torch.ones(length, length, dtype=torch.bool, device=visible.device).tril()
    return (causal & visible[None, :]) | torch.eye(length, dtype=torch.bool, device=visible.device)


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi's geometric head slopes 2^(-8h/H) for H a power of two; otherwise those of the
    next lower power of two, then every other slope of the next higher one (Press et al.)."""

    def powers(n: int) -> list[float]:
        return [2 ** (-8 * (h + 1) / n) for h in range(n)]

    lower = 2 ** math.floor(math.log2(n_heads))
    slopes = powers(lower) + powers(2 * lower)[0::2][: n_heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)
