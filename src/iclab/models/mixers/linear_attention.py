"""Linear attention and its decayed relatives: linear self-attention, retention and gated linear
attention, all computed by one function, ``decayed_linear_attention``.

Each of them is, per head, the recurrence (g_t ≤ 0 a log decay; g_t = 0 means no decay)

    S_t = exp(g_t) S_{t-1} + k_t v_tᵀ,        o_t = S_tᵀ q_t,        S_t: (Dk, Dv)

or equivalently o_t = Σ_{s≤t} exp(G_t − G_s) (q_t·k_s) v_s with G_t = g_1 + … + g_t. They differ
only in what q, k, v and g are (feature maps, scales, fixed or data-dependent decays) and in what
is done with o (normalisation, gates). Three computations give the same outputs:

- parallel: the masked (T, T) quadratic form, as in softmax attention without the softmax;
- chunked: exact quadratic form inside chunks of C steps plus a (Dk, Dv) state carried across
  chunks (Lightning Attention-2, Qin et al. 2024; RetNet's chunkwise form, Sun et al. 2023);
- recurrent: the recurrence above, one step at a time (what ``step`` streams).

Decay matrices are always exp of differences of cumulative log decays, masked before the exp;
exp(G_t)·exp(−G_s) would overflow after a few hundred strongly decaying steps.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from iclab.models.mixers.base import (
    Mixer,
    MixerOptions,
    MixerState,
    balanced_chunks,
    register_mixer,
)
from iclab.models.mixers.conv import ShortConv
from iclab.models.mixers.kernels import kernel_applies, linear_attention_kernel

Form = Literal["parallel", "chunked", "recurrent"]


# ---------------------------------------------------------------------------------------------
# The shared core: plain functions of (B, H, T, D) tensors, so a GPU kernel can replace them.


def decayed_linear_attention(
    q: Tensor,  # (B, H, T, Dk)
    k: Tensor,  # (B, H, T, Dk)
    v: Tensor,  # (B, H, T, Dv)
    log_decay: Tensor | None = None,  # (B, H, T), ≤ 0; None means no decay
    form: Form = "chunked",
    chunk_size: int = 64,
) -> Tensor:  # (B, H, T, Dv)
    """o_t = Σ_{s≤t} exp(G_t − G_s) (q_t·k_s) v_s, computed in the chosen form."""
    if form == "parallel":
        return parallel_form(q, k, v, log_decay)
    if form == "chunked":
        return chunked_form(q, k, v, log_decay, chunk_size)
    if form == "recurrent":
        return recurrent_form(q, k, v, log_decay)
    raise ValueError(f"unknown form {form!r}; choose parallel, chunked or recurrent")


def cumulative_log_decay(log_decay: Tensor | None) -> Tensor | None:
    """G_t = g_1 + … + g_t along the last axis, in at least float32 (bfloat16 sums drift)."""
    if log_decay is None:
        return None
    return log_decay.to(torch.promote_types(log_decay.dtype, torch.float32)).cumsum(-1)


def decay_matrix(cumulative: Tensor | None, length: int, device: torch.device) -> Tensor:
    """(…, T, T) with entry [t, s] = exp(G_t − G_s) for t ≥ s and 0 above the diagonal, from the
    cumulative log decays G (…, T); the plain causal mask when there is no decay."""
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    if cumulative is None:
        return causal.float()
    gaps = cumulative[..., :, None] - cumulative[..., None, :]  # G_t − G_s: (…, T, T)
    return gaps.masked_fill(~causal, -math.inf).exp()


def scale_rows(x: Tensor, log_factor: Tensor | None) -> Tensor:
    """x (…, T, D) with row t multiplied by exp(log_factor[…, t]); x itself when None."""
    return x if log_factor is None else x * log_factor.exp()[..., None].to(x.dtype)


def parallel_form(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor:
    decay = decay_matrix(cumulative_log_decay(log_decay), q.shape[-2], q.device)  # (…, T, T)
    scores = (q @ k.transpose(-1, -2)) * decay.to(q.dtype)  # (B, H, T, T)
    return scores @ v


def chunked_form(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, chunk_size: int
) -> Tensor:
    """Quadratic inside chunks, states across them (Lightning Attention-2, Qin et al. 2024).

    With b_i the log decay from the start of a chunk through its step i (C steps a chunk):
      o_i = Σ_{j≤i in chunk} exp(b_i − b_j)(q_i·k_j) v_j + exp(b_i) S_prevᵀ q_i,
      S_end = exp(b_C) S_prev + Σ_j exp(b_C − b_j) k_j v_jᵀ.
    The states entering every chunk come from one chunk-level decay matrix rather than a loop.
    """
    batch, heads, length, key_dim = q.shape
    value_dim = v.shape[-1]
    n_chunks, size = balanced_chunks(length, chunk_size)
    padding = n_chunks * size - length  # zero keys and values at the end change nothing before
    if padding:
        q, k, v = (F.pad(x, (0, 0, 0, padding)) for x in (q, k, v))
        log_decay = None if log_decay is None else F.pad(log_decay, (0, padding))
    q = q.reshape(batch, heads, n_chunks, size, key_dim)
    k = k.reshape(batch, heads, n_chunks, size, key_dim)
    v = v.reshape(batch, heads, n_chunks, size, value_dim)
    if log_decay is not None:
        log_decay = log_decay.reshape(batch, heads, n_chunks, size)
    within = cumulative_log_decay(log_decay)  # b_i: (B, H, N, C)

    # Inside each chunk: the parallel form on (C, C) blocks.
    scores = (q @ k.transpose(-1, -2)) * decay_matrix(within, size, q.device).to(q.dtype)
    out = scores @ v  # (B, H, N, C, Dv)
    if n_chunks == 1:
        return out[:, :, 0, :length]

    # Each chunk's own contribution to the state at its end: Σ_j exp(b_C − b_j) k_j v_jᵀ.
    to_end = None if within is None else within[..., -1:] - within  # (B, H, N, C)
    contributions = scale_rows(k, to_end).transpose(-1, -2) @ v  # (B, H, N, Dk, Dv)
    # State at the end of chunk n: Σ_{m≤n} exp(Gc_n − Gc_m) contribution_m, Gc the cumulative
    # log decay at chunk ends; the state entering chunk n is the one at the end of chunk n − 1.
    chunk_ends = None if within is None else within[..., -1].cumsum(-1)  # Gc: (B, H, N)
    across = decay_matrix(chunk_ends, n_chunks, q.device).to(v.dtype)  # (…, N, N)
    ends = across @ contributions.flatten(-2)  # (B, H, N, Dk·Dv)
    entering = F.pad(ends[:, :, :-1], (0, 0, 1, 0)).view(batch, heads, n_chunks, key_dim, -1)
    out = out + scale_rows(q, within) @ entering
    return out.flatten(2, 3)[:, :, :length]


def recurrent_step(
    state: Tensor,  # (B, H, Dk, Dv), S_{t-1}
    q: Tensor,  # (B, H, Dk)
    k: Tensor,  # (B, H, Dk)
    v: Tensor,  # (B, H, Dv)
    log_decay: Tensor | None = None,  # (B, H)
) -> tuple[Tensor, Tensor]:
    """S_t = exp(g_t) S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t, in the state's dtype; returns
    (o_t (B, H, Dv) in q's dtype, S_t) and leaves ``state`` untouched."""
    dtype = state.dtype
    if log_decay is not None:
        state = state * log_decay.to(dtype).exp()[..., None, None]
    state = state + k.to(dtype)[..., :, None] * v.to(dtype)[..., None, :]
    out = (q.to(dtype)[..., None, :] @ state).squeeze(-2)
    return out.to(q.dtype), state


def recurrent_form(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor:
    batch, heads, length, key_dim = q.shape
    state_dtype = torch.promote_types(q.dtype, torch.float32)
    state = q.new_zeros(batch, heads, key_dim, v.shape[-1], dtype=state_dtype)
    outputs = []
    for t in range(length):
        decay_t = None if log_decay is None else log_decay[:, :, t]
        out, state = recurrent_step(state, q[:, :, t], k[:, :, t], v[:, :, t], decay_t)
        outputs.append(out)
    return torch.stack(outputs, dim=2)


def retention_log_decays(n_heads: int) -> Tensor:
    """log γ_h with γ_h = 1 − 2^(−5−h), h = 0 … H−1 (RetNet, Sun et al. 2023, §2.2): (H,)."""
    exponents = -5.0 - torch.arange(n_heads, dtype=torch.float64)
    return torch.log1p(-(2.0**exponents)).float()


# ---------------------------------------------------------------------------------------------
# Mixers: each says what q, k, v, g are and what becomes of o; the base does the rest.


class FormOptions(MixerOptions):
    form: Form = Field("chunked", description="computation: parallel, chunked or recurrent")
    chunk_size: int = Field(64, ge=1, description="steps per chunk in the chunked form")
    kernel: bool = Field(
        True,
        description="on CUDA with flash-linear-attention installed (extra [gpu]), the chunked "
        "form runs its Triton kernel",
    )


class ConvolvedOptions(FormOptions):
    short_conv: int = Field(
        4,
        ge=0,
        description="kernel size of a depthwise causal convolution on the input before q, k, v "
        "(0: none), as fla's ShortConvolution: without it the mixer cannot pair x_i with y_i "
        "in an interleaved prompt (measured: no learning in 1500 steps of the quickstart task)",
    )


class PositionedOptions(ConvolvedOptions):
    positions: Literal["learned", "none"] = Field(
        "none",
        description="learned: a position table added at the input, as Katharopoulos et al. "
        "used (no longer prompts than trained); none: order from the convolution alone",
    )


class LinearSelfAttentionOptions(PositionedOptions):
    short_conv: int = Field(
        0,
        ge=0,
        description="kernel size of a causal convolution before q, k, v; 0 (von Oswald et al.'s "
        "bare layer, made for one token per (x, y) pair) leaves x_i and y_i unpaired here",
    )


class DecayedLinearMixer(Mixer):
    """What every mixer here shares: forward through ``decayed_linear_attention``, streaming
    through ``recurrent_step``, a state of one (Dk, Dv') matrix per head. Subclasses define
    ``heads`` (q, k, v, log decay from x) and ``merge`` (heads' outputs back to (B, T, E))."""

    forms = ("parallel", "chunked", "recurrent")
    state_formula = "E²/H (+E·(short_conv − 1))"

    def __init__(self, d_model: int, n_heads: int, options: MixerOptions | None = None) -> None:
        super().__init__(d_model, n_heads, options)
        self.head_dim = d_model // n_heads
        size = self.options.short_conv
        self.short_conv = ShortConv(d_model, size) if size else None

    @property
    def value_dim(self) -> int:
        """Columns of each head's state (Dv, plus one where a normaliser rides along)."""
        return self.head_dim

    def split_heads(self, x: Tensor) -> Tensor:  # (B, T, H·D) → (B, H, T, D)
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """x (B, T, E) → q, k (B, H, T, Dk), v (B, H, T, Dv'), log decay (B, H, T) or None."""
        raise NotImplementedError

    def merge(self, out: Tensor, x: Tensor) -> Tensor:
        """out (B, H, T, Dv') and the mixer's input x (B, T, E) → (B, T, E)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, E)
        q, k, v, log_decay = self.heads(x if self.short_conv is None else self.short_conv(x))
        form, chunk_size = self.options.form, self.options.chunk_size
        gated = log_decay is not None
        if form == "chunked" and kernel_applies(self.options.kernel, x, gated):
            return self.merge(linear_attention_kernel(q, k, v, log_decay), x)
        return self.merge(decayed_linear_attention(q, k, v, log_decay, form, chunk_size), x)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MixerState:
        state_dtype = torch.promote_types(dtype, torch.float32)
        shape = (batch, self.n_heads, self.head_dim, self.value_dim)
        memory = torch.zeros(shape, device=device, dtype=state_dtype)
        if self.short_conv is None:
            return (memory,)
        return memory, self.short_conv.init_state(batch, device, dtype)

    def step(self, x: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:  # x: (B, E)
        memory, *window = state
        mixed = x
        if self.short_conv is not None:
            mixed, window[0] = self.short_conv.step(x, window[0])
        q, k, v, log_decay = self.heads(mixed[:, None])  # one-step sequences
        decay = None if log_decay is None else log_decay[:, :, 0]
        out, memory = recurrent_step(memory, q[:, :, 0], k[:, :, 0], v[:, :, 0], decay)
        return self.merge(out[:, :, None], x[:, None])[:, 0], (memory, *window)

    def state_size(self, length: int) -> int:
        window = 0 if self.short_conv is None else self.short_conv.state_size()
        return self.n_heads * self.head_dim * self.value_dim + window


FEATURE_MAPS = {
    "identity": lambda x: x,
    "elu": lambda x: F.elu(x) + 1.0,
    "relu": F.relu,
}


class LinearAttentionOptions(PositionedOptions):
    feature_map: Literal["identity", "elu", "relu"] = Field(
        "elu", description="φ applied to queries and keys; elu means elu(x) + 1"
    )
    normalize: bool = Field(
        True, description="divide by φ(q_t)·Σ_{s≤t} φ(k_s), as attention weights sum to one"
    )

    @model_validator(mode="after")
    def check_denominator_stays_positive(self) -> LinearAttentionOptions:
        if self.normalize and self.feature_map == "identity":
            raise ValueError(
                "feature_map=identity with normalize=true: the normaliser q_t·Σk_s can be zero "
                "or negative; use normalize=false or feature_map=elu/relu"
            )
        return self


@register_mixer("linear_attention")
class LinearAttention(DecayedLinearMixer):
    """Causal linear attention: softmax(q·k) replaced by φ(q)·φ(k), so attention becomes a
    running sum of φ(k) vᵀ; optionally normalised by the running sum of φ(k)."""

    Options = LinearAttentionOptions
    state_formula = "E²/H (+E if normalize, +E·(short_conv − 1))"
    learning_rate = 2e-3
    paper = (
        "Katharopoulos et al. 2020, arXiv 2006.16236; chunked form after Lightning "
        "Attention-2, Qin et al. 2024, arXiv 2401.04658"
    )
    bias: ClassVar[bool] = True
    eps: ClassVar[float] = 1e-6

    def __init__(self, d_model: int, n_heads: int, options: MixerOptions | None = None) -> None:
        super().__init__(d_model, n_heads, options)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=self.bias)
        self.proj = nn.Linear(d_model, d_model, bias=self.bias)

    @property
    def uses_learned_positions(self) -> bool:
        return self.options.positions == "learned"

    @property
    def feature_map(self) -> str:
        return self.options.feature_map

    @property
    def normalize(self) -> bool:
        return self.options.normalize

    @property
    def value_dim(self) -> int:
        return self.head_dim + int(self.normalize)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        q, k, v = map(self.split_heads, self.qkv(x).chunk(3, dim=-1))  # each (B, H, T, D)
        phi = FEATURE_MAPS[self.feature_map]
        if self.normalize:  # a ones column makes the last output column φ(q_t)·Σ_{s≤t} φ(k_s)
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        return phi(q), phi(k), v, None

    def merge(self, out: Tensor, x: Tensor) -> Tensor:
        if self.normalize:  # Katharopoulos et al. eq. 5
            out = out[..., :-1] / (out[..., -1:] + self.eps)
        return self.proj(out.transpose(1, 2).flatten(2))


@register_mixer("linear_self_attention")
class LinearSelfAttention(LinearAttention):
    """Linear self-attention (LSA): q·k with no feature map, normaliser or biases, the layer in
    which one step of gradient descent on in-context least squares is written exactly."""

    Options = LinearSelfAttentionOptions
    learning_rate = 5e-3
    paper = "von Oswald et al. 2023, arXiv 2212.07677"
    bias = False

    @property
    def feature_map(self) -> str:
        return "identity"

    @property
    def normalize(self) -> bool:
        return False


class GatedLinearAttentionOptions(ConvolvedOptions):
    decay: Literal["data", "fixed"] = Field(
        "data",
        description="data: per-head decay from each input, σ(W_g x + b)^(1/16); "
        "fixed: RetNet's γ_h = 1 − 2^(−5−h)",
    )


@register_mixer("gla")
class GatedLinearAttention(DecayedLinearMixer):
    """Gated linear attention with one scalar decay per head and step, computed from the input:
    S_t = α_t S_{t-1} + k_t v_tᵀ, then a per-head GroupNorm and a swish output gate."""

    Options = GatedLinearAttentionOptions
    learning_rate = 5e-3
    paper = (
        "Yang et al. 2023, arXiv 2312.06635 (scalar per-head gates as in gated retention); "
        "fixed decays from Sun et al. 2023, arXiv 2307.08621"
    )
    gate_temperature: ClassVar[float] = 16.0  # τ in GLA's α = σ(·)^(1/τ)

    def __init__(self, d_model: int, n_heads: int, options: MixerOptions | None = None) -> None:
        super().__init__(d_model, n_heads, options)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.decay_gate = nn.Linear(d_model, n_heads) if self.options.decay == "data" else None
        self.head_norm = nn.GroupNorm(n_heads, d_model)  # LayerNorm of each head's output
        self.gate = nn.Linear(d_model, d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.reset_special_parameters()

    def reset_special_parameters(self) -> None:
        """Start data-dependent decays at RetNet's fixed ones, σ(b_h)^(1/τ) = γ_h, so heads begin
        with memories from ~32 to ~2^(4+H) steps."""
        if self.decay_gate is not None:
            log_gamma = retention_log_decays(self.n_heads).double()
            log_sigmoid_bias = self.gate_temperature * log_gamma  # log σ(b) = τ log γ
            bias = log_sigmoid_bias - torch.log(-torch.expm1(log_sigmoid_bias))  # logit
            with torch.no_grad():
                self.decay_gate.bias.copy_(bias)

    def log_decay(self, x: Tensor) -> Tensor:  # x: (B, T, E) → (B, H, T), all < 0
        if self.decay_gate is None:
            log_gamma = retention_log_decays(self.n_heads).to(x.device)
            return log_gamma[None, :, None].expand(x.shape[0], -1, x.shape[1])
        gate = self.decay_gate(x).transpose(1, 2).float()  # (B, H, T)
        return F.logsigmoid(gate) / self.gate_temperature

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        q, k, v = map(self.split_heads, self.qkv(x).chunk(3, dim=-1))  # each (B, H, T, D)
        return q * self.head_dim**-0.5, k, v, self.log_decay(x)

    def merge(self, out: Tensor, x: Tensor) -> Tensor:
        out = out.transpose(1, 2).flatten(2)  # (B, T, E)
        normed = self.head_norm(out.flatten(0, 1)).view_as(out)  # GroupNorm wants (N, C)
        return self.proj(F.silu(self.gate(x)) * normed)


class RetentionOptions(GatedLinearAttentionOptions):
    decay: Literal["data", "fixed"] = Field(
        "fixed",
        description="fixed: γ_h = 1 − 2^(−5−h) per head; data: gla's input-dependent decays",
    )


@register_mixer("retention")
class Retention(GatedLinearAttention):
    """Multi-scale retention (RetNet) without xPos: linear attention with a fixed decay
    γ_h = 1 − 2^(−5−h) per head, GroupNorm of each head and a swish output gate; gla with
    fixed decays."""

    Options = RetentionOptions
    learning_rate = 2e-3
    paper = "Sun et al. 2023, arXiv 2307.08621"
