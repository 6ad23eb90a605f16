"""DeltaNet: linear attention whose state is written with the delta rule.

Schlag, Irie & Schmidhuber 2021 (arXiv 2102.11174) replace linear attention's additive write
S_t = S_{t−1} + v_t k_tᵀ by the delta rule

    S_t = S_{t−1} + β_t (v_t − S_{t−1} k_t) k_tᵀ,        o_t = S_t q_t,

which is exactly one step of online gradient descent, with learning rate β_t, on the regression
loss ½‖S k_t − v_t‖² (its gradient is (S k_t − v_t) k_tᵀ). Each token therefore *corrects* the
value stored under its key instead of piling a new one on top: with β_t = 1 and a unit-norm key
the state recalls v_t exactly afterwards. This is why DeltaNet matters for in-context learning:
its forward pass is a learner running gradient descent on the (key, value) pairs in its context.

Following Yang et al. 2024 (arXiv 2406.06484), q and k go through SiLU then L2 normalisation per
head (no short convolution here), β_t = sigmoid(W_β x_t) per head, and the training forms use the
chunked WY/UT representation, which turns the sequential update into matrix products and one
small triangular solve per chunk.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from iclab.models.mixers.base import (
    Mixer,
    MixerOptions,
    MixerState,
    balanced_chunks,
    register_mixer,
)
from iclab.models.mixers.kernels import delta_rule_kernel, kernel_applies


class DeltaNetOptions(MixerOptions):
    form: Literal["parallel", "chunked", "recurrent"] = Field(
        "chunked",
        description="computation: parallel (one chunk of the whole sequence), chunked (WY "
        "representation per chunk, state carried across chunks) or recurrent (one token at a "
        "time); all give the same outputs",
    )
    chunk_size: int = Field(64, ge=1, description="tokens per chunk of the chunked form")
    kernel: bool = Field(
        True,
        description="on CUDA with flash-linear-attention installed (extra [gpu]) and bfloat16 "
        "inputs, the chunked form runs its Triton kernel (which has no float32 version)",
    )


def delta_rule_step(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor
) -> tuple[Tensor, Tensor]:
    """One token of the delta rule (Schlag et al. 2021), for any leading batch shape.

    state (..., Dv, Dk); q, k (..., Dk); v (..., Dv); beta (...). Returns (o (..., Dv), new
    state); the update is S − β ∇_S ½‖S k − v‖², and ``state`` is not modified.
    """
    prediction = (state @ k.unsqueeze(-1)).squeeze(-1)  # S k: (..., Dv)
    error = beta.unsqueeze(-1) * (v - prediction)  # β (v − S k): (..., Dv)
    state = state + error.unsqueeze(-1) * k.unsqueeze(-2)  # + β (v − S k) kᵀ: (..., Dv, Dk)
    output = (state @ q.unsqueeze(-1)).squeeze(-1)  # S_t q_t: (..., Dv)
    return output, state


def delta_rule_chunked(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, chunk_size: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The delta rule over a whole sequence, chunk by chunk (Yang et al. 2024, §3).

    q, k (B, H, T, Dk); v (B, H, T, Dv); beta (B, H, T); state (B, H, Dv, Dk) or None for zeros.
    Returns (o (B, H, T, Dv), final state). Within a chunk the product of Householder-like factors
    Π (I − β_i k_i k_iᵀ) is kept in WY form, I − Σ w_i k_iᵀ, so the state after token t of a chunk
    is S_prev + Σ_{i≤t} (u_i − S_prev w_i) k_iᵀ, with (UT transform)

        W = T K,  U = T V,  T = (I + tril(diag(β) K Kᵀ, −1))⁻¹ diag(β).

    Everything but the carry of S across chunks is batched over all chunks at once.
    """
    batch, heads, length, key_dim = k.shape
    value_dim = v.shape[-1]
    n_chunks, chunk_size = balanced_chunks(length, chunk_size)
    padding = n_chunks * chunk_size - length  # zero keys and β leave the state unchanged
    if padding:
        q, k, v = (F.pad(tensor, (0, 0, 0, padding)) for tensor in (q, k, v))
        beta = F.pad(beta, (0, padding))

    def chunks(tensor: Tensor) -> Tensor:  # (B, H, N·C, D) → (B, H, N, C, D)
        return tensor.reshape(batch, heads, n_chunks, chunk_size, tensor.shape[-1])

    q, k, v, beta = chunks(q), chunks(k), chunks(v), chunks(beta.unsqueeze(-1))

    # UT transform: solve (I + A) [W U] = diag(β) [K V], A = tril(diag(β) K Kᵀ, −1): (B,H,N,C,C).
    # solve_triangular with unitriangular=True takes the ones on the diagonal as given.
    strictly_lower = torch.tril(beta * (k @ k.transpose(-1, -2)), diagonal=-1)
    targets = beta * torch.cat([k, v], dim=-1)  # (B, H, N, C, Dk + Dv)
    solved = torch.linalg.solve_triangular(strictly_lower, targets, upper=False, unitriangular=True)
    w, u = solved.split([key_dim, value_dim], dim=-1)  # (B,H,N,C,Dk), (B,H,N,C,Dv)

    # O = Q Sᵀ + tril(Q Kᵀ) (U − W Sᵀ) = (Q − tril(Q Kᵀ) W) Sᵀ + tril(Q Kᵀ) U: only the states
    # entering each chunk need the loop; the rest is batched over chunks.
    causal_scores = torch.tril(q @ k.transpose(-1, -2))  # q_tᵀ k_i for i ≤ t: (B, H, N, C, C)
    q_after_chunk = q - causal_scores @ w  # (B, H, N, C, Dk)
    output_within_chunk = causal_scores @ u  # (B, H, N, C, Dv)
    if state is None:
        state = q.new_zeros(batch, heads, value_dim, key_dim)
    entering = []  # S_prev of every chunk: N × (B, H, Dv, Dk)
    for n in range(n_chunks):
        entering.append(state)
        corrected = u[:, :, n] - w[:, :, n] @ state.transpose(-1, -2)  # U' = U − W Sᵀ: (B,H,C,Dv)
        state = state + corrected.transpose(-1, -2) @ k[:, :, n]  # S + U'ᵀ K: (B, H, Dv, Dk)
    entering = torch.stack(entering, dim=2)  # (B, H, N, Dv, Dk)
    output = q_after_chunk @ entering.transpose(-1, -2) + output_within_chunk  # (B,H,N,C,Dv)
    output = output.reshape(batch, heads, n_chunks * chunk_size, value_dim)
    return output[:, :, :length], state


@register_mixer("deltanet")
class DeltaNet(Mixer):
    """DeltaNet: multi-head linear attention whose (Dv × Dk) state per head is written with the
    delta rule, one online gradient-descent step on ½‖S k_t − v_t‖² per token."""

    Options: ClassVar[type[MixerOptions]] = DeltaNetOptions
    forms: ClassVar[tuple[str, ...]] = ("parallel", "chunked", "recurrent")
    state_formula: ClassVar[str] = "E²/H"
    learning_rate: ClassVar[float] = 2e-3
    paper: ClassVar[str] = (
        "Schlag, Irie & Schmidhuber 2021, arXiv 2102.11174; chunked form: Yang et al. 2024, "
        "arXiv 2406.06484"
    )

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        options: MixerOptions | None = None,
    ) -> None:
        super().__init__(d_model, n_heads, options)
        self.head_dim = d_model // n_heads  # Dk = Dv
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.beta = nn.Linear(d_model, n_heads, bias=False)  # β_t = sigmoid(W_β x_t) per head
        self.norm = nn.RMSNorm(self.head_dim, eps=1e-5)  # per head, shared weight
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, E) → q, k, v (B, H, T, D) and β (B, H, T), in float32 for the state math."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).float().view(batch, length, 3, self.n_heads, self.head_dim).unbind(2)
        q, k, v = (tensor.transpose(1, 2) for tensor in (q, k, v))  # each (B, H, T, D)
        q = F.normalize(F.silu(q), dim=-1, eps=1e-6)  # Yang et al. 2024: SiLU then L2
        k = F.normalize(F.silu(k), dim=-1, eps=1e-6)  # unit keys keep each write a contraction
        beta = torch.sigmoid(self.beta(x).float()).transpose(1, 2)  # (B, H, T), in (0, 1)
        return q, k, v, beta

    def output(self, o: Tensor, dtype: torch.dtype) -> Tensor:
        """o (B, H, T, Dv) → RMSNorm per head, heads concatenated, ``proj``: (B, T, E)."""
        batch, _, length, _ = o.shape
        normed = F.rms_norm(o.float(), (self.head_dim,), self.norm.weight.float(), self.norm.eps)
        return self.proj(normed.transpose(1, 2).reshape(batch, length, self.d_model).to(dtype))

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, E)
        q, k, v, beta = self.heads(x)
        form = self.options.form
        if form == "recurrent":
            o = self.recurrent(q, k, v, beta)
        elif (
            form == "chunked"
            and x.dtype != torch.float32
            and kernel_applies(self.options.kernel, x)
        ):
            o = delta_rule_kernel(q, k, v, beta, x.dtype)
        else:
            chunk_size = self.options.chunk_size if form == "chunked" else x.shape[1]
            o, _ = delta_rule_chunked(q, k, v, beta, chunk_size)
        return self.output(o, x.dtype)

    def recurrent(self, q: Tensor, k: Tensor, v: Tensor, beta: Tensor) -> Tensor:
        """One token at a time with the math of ``step``: (B, H, T, ·) → o (B, H, T, Dv)."""
        (state,) = self.init_state(q.shape[0], q.device, q.dtype)
        outputs = []
        for t in range(q.shape[2]):
            o, state = delta_rule_step(state, q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t])
            outputs.append(o)
        return torch.stack(outputs, dim=2)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MixerState:
        """(S,) with S = 0: (B, H, Dv, Dk), kept in at least float32."""
        state_dtype = torch.promote_types(dtype, torch.float32)
        shape = (batch, self.n_heads, self.head_dim, self.head_dim)
        return (torch.zeros(shape, device=device, dtype=state_dtype),)

    def step(self, x: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:  # x: (B, E)
        q, k, v, beta = self.heads(x.unsqueeze(1))  # (B, H, 1, ·)
        (memory,) = state
        o, memory = delta_rule_step(memory, q[:, :, 0], k[:, :, 0], v[:, :, 0], beta[:, :, 0])
        return self.output(o.unsqueeze(2), x.dtype).squeeze(1), (memory,)

    def state_size(self, length: int) -> int:
        return self.n_heads * self.head_dim * self.head_dim  # H · Dv · Dk = E²/H
