"""Selective state-space model (Mamba), in plain PyTorch.

Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv
2312.00752), Algorithm 2 and Section 3. Each of the D = expand·E channels carries an N-dimensional
diagonal linear state whose step size Δ and input/output maps B, C depend on the current token:

    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,     y_t = C_t · h_t + D ⊙ x_t

(zero-order hold for A, Mamba's simplified Euler step for B). The training forms compute the
recurrence with a log-depth associative scan instead of a loop over time.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from iclab.models.mixers.base import Mixer, MixerOptions, MixerState, register_mixer
from iclab.models.mixers.conv import ShortConv


class MambaOptions(MixerOptions):
    d_state: int = Field(16, ge=1, description="N: state size per channel")
    d_conv: int = Field(4, ge=1, description="kernel size of the causal depthwise convolution")
    expand: int = Field(2, ge=1, description="inner channels D = expand · d_model")
    dt_rank: int | None = Field(
        None, ge=1, description="rank of the Δ projection; null means ceil(d_model / 16)"
    )
    form: Literal["parallel", "chunked", "recurrent"] = Field(
        "chunked",
        description="parallel: one scan over the sequence; chunked: scans over chunks carrying "
        "the state; recurrent: one token at a time",
    )
    chunk_size: int = Field(64, ge=1, description="tokens per chunk in the chunked form")


def linear_recurrence(decay: Tensor, drive: Tensor, initial: Tensor | None = None) -> Tensor:
    """All states of h_t = decay_t ⊙ h_{t−1} + drive_t along dim 1, from h_{−1} = ``initial``
    (zero when None); decay, drive: (B, L, ...), initial: (B, ...)."""
    return _LinearRecurrence.apply(decay, drive, initial)


def _scan(decay: Tensor, drive: Tensor, initial: Tensor | None) -> Tensor:
    """A work-efficient (Blelloch-style) associative scan: consecutive steps (2k, 2k+1) compose
    into one step with the operator (a₁, b₁) ∘ (a₂, b₂) = (a₂a₁, a₂b₁ + b₂); the paired sequence
    is scanned recursively, giving the odd states, and each even state is one step on from the
    odd state before it. Depth O(log L), work O(L). Only products of decays ≤ 1 appear (no
    exp(−cumsum) ratios), so strong decays underflow harmlessly to 0 instead of overflowing."""
    length = decay.shape[1]
    first = drive[:, 0] if initial is None else decay[:, 0] * initial + drive[:, 0]
    if length == 1:
        return first.unsqueeze(1)
    paired = 2 * (length // 2)
    a_even, b_even = decay[:, 0:paired:2], drive[:, 0:paired:2]
    a_odd, b_odd = decay[:, 1::2], drive[:, 1::2]
    odd_states = _scan(a_odd * a_even, a_odd * b_even + b_odd, initial)  # h_1, h_3, ...
    n_later_even = (length - 1) // 2  # h_2, h_4, ... each follow an odd state
    states = torch.empty_like(drive)
    states[:, 0] = first
    states[:, 1::2] = odd_states
    torch.addcmul(drive[:, 2::2], decay[:, 2::2], odd_states[:, :n_later_even], out=states[:, 2::2])
    return states


def _scan_backwards(coupling: Tensor, source: Tensor) -> Tensor:
    """All λ of λ_t = source_t + coupling_t ⊙ λ_{t+1} from λ_L = 0, along dim 1, where
    ``coupling`` (B, L−1, ...) links step t to t+1: ``_scan`` mirrored in time, pairing steps
    from the end so that the last step is never left over."""
    length = source.shape[1]
    if length == 1:
        return source
    odd = length % 2  # steps (odd + 2k, odd + 2k + 1) form pairs; step 0 is left over if odd
    g_first, g_second = source[:, odd::2], source[:, odd + 1 :: 2]
    c_inner, c_outer = coupling[:, odd::2], coupling[:, odd + 1 :: 2]  # within / after pair
    # pair k: λ_first = g_first + c_inner g_second + c_inner c_outer λ_first(k+1)
    firsts = _scan_backwards(c_inner[:, :-1] * c_outer, torch.addcmul(g_first, c_inner, g_second))
    adjoint = torch.empty_like(source)
    adjoint[:, odd::2] = firsts
    adjoint[:, -1] = source[:, -1]
    torch.addcmul(g_second[:, :-1], c_outer, firsts[:, 1:], out=adjoint[:, odd + 1 : -1 : 2])
    if odd:
        adjoint[:, 0] = source[:, 0] + coupling[:, 0] * firsts[:, 0]
    return adjoint


class _LinearRecurrence(torch.autograd.Function):
    """The scan with its adjoint written out: the gradient of a linear recurrence is the same
    recurrence run backwards in time, λ_t = g_t + decay_{t+1} ⊙ λ_{t+1}, after which
    ∂drive_t = λ_t, ∂decay_t = λ_t ⊙ h_{t−1}, ∂initial = decay_0 ⊙ λ_0. (Autograd through the
    strided slices of ``_scan`` would cost about three times as much.)"""

    @staticmethod
    def forward(ctx, decay: Tensor, drive: Tensor, initial: Tensor | None) -> Tensor:
        states = _scan(decay, drive, initial)
        ctx.save_for_backward(decay, states, initial)
        return states

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_states: Tensor):
        decay, states, initial = ctx.saved_tensors
        adjoint = _scan_backwards(decay[:, 1:], grad_states)  # λ: (B, L, ...)
        grad_decay = torch.empty_like(decay)
        torch.mul(adjoint[:, 1:], states[:, :-1], out=grad_decay[:, 1:])
        if initial is None:
            grad_decay[:, 0] = 0.0
            grad_initial = None
        else:
            grad_decay[:, 0] = adjoint[:, 0] * initial
            grad_initial = decay[:, 0] * adjoint[:, 0]
        return grad_decay, adjoint, grad_initial


@register_mixer("mamba")
class Mamba(Mixer):
    """Mamba selective state-space mixer (S6 with gated, convolved input), pure PyTorch."""

    Options = MambaOptions
    forms = ("parallel", "chunked", "recurrent")
    state_formula = "expand·E·(d_state + d_conv − 1)"
    paper = "Gu & Dao 2023, arXiv 2312.00752"
    learning_rate = 5e-3

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        options: MambaOptions | None = None,
    ) -> None:
        super().__init__(d_model, n_heads, options)
        opts = self.options
        self.d_inner = opts.expand * d_model
        self.dt_rank = opts.dt_rank if opts.dt_rank is not None else math.ceil(d_model / 16)
        inner, n_state = self.d_inner, opts.d_state
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=False)  # → x, gate z
        self.conv = ShortConv(inner, opts.d_conv)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * n_state, bias=False)  # → Δ_low, B, C
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        self.A_log = nn.Parameter(torch.empty(inner, n_state))  # A = −exp(A_log): (D, N)
        self.skip = nn.Parameter(torch.empty(inner))  # D in the paper
        for parameter in (self.A_log, self.skip):  # as in Mamba: dynamics are not decayed
            parameter._no_weight_decay = True
        self.proj = nn.Linear(inner, d_model, bias=False)
        self.reset_special_parameters()

    @classmethod
    def width_multiple(cls, n_heads: int, options: MixerOptions) -> int:
        return 1  # channels, not heads

    def reset_special_parameters(self, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """Mamba's init: A = −(1, ..., N) per channel (S4D-real), skip D = 1, and Δ's bias the
        inverse softplus of Δ drawn log-uniformly from [dt_min, dt_max]."""
        with torch.no_grad():
            n_state = self.options.d_state
            real = torch.arange(1, n_state + 1, dtype=torch.float32, device=self.A_log.device)
            self.A_log.copy_(real.log().expand_as(self.A_log))
            self.skip.fill_(1.0)
            bound = self.dt_rank**-0.5
            nn.init.uniform_(self.dt_proj.weight, -bound, bound)
            log_dt = torch.empty_like(self.dt_proj.bias).uniform_(
                math.log(dt_min), math.log(dt_max)
            )
            dt = log_dt.exp().clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)

    # --- shared pieces -------------------------------------------------------------------------

    def _selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Input-dependent Δ (…, D), B (…, N), C (…, N) in float32 (Algorithm 2, lines 3-5)."""
        n_state = self.options.d_state
        dt_low, b, c = self.x_proj(u).split([self.dt_rank, n_state, n_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt_low).float())
        return delta, b.float(), c.float()

    def _decay(self, delta: Tensor) -> Tensor:  # (…, D) → Ā = exp(Δ A): (…, D, N)
        return torch.exp(delta.unsqueeze(-1) * -torch.exp(self.A_log.float()))

    def _gate_and_project(self, y: Tensor, u: Tensor, z: Tensor) -> Tensor:
        y = y.to(u.dtype) + self.skip.to(u.dtype) * u  # + D ⊙ x
        return self.proj(y * F.silu(z))

    # --- training forms ------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, E) → (B, T, E)
        if self.options.form == "recurrent":
            return self._recurrent(x)
        u, z = self.in_proj(x).chunk(2, dim=-1)  # each (B, T, D)
        u = F.silu(self.conv(u))
        delta, b, c = self._selection(u)  # (B, T, D), (B, T, N), (B, T, N)
        length = x.shape[1]
        chunk = self.options.chunk_size if self.options.form == "chunked" else length
        drive_scale = delta * u.float()  # Δ_t x_t: (B, T, D)
        state, outputs = None, []
        for start in range(0, length, chunk):
            window = slice(start, start + chunk)
            decay = self._decay(delta[:, window])  # Ā: (B, L, D, N)
            drive = drive_scale[:, window, :, None] * b[:, window, None, :]  # B̄x: (B, L, D, N)
            states = linear_recurrence(decay, drive, state)  # h: (B, L, D, N)
            outputs.append((states * c[:, window, None, :]).sum(-1))  # C·h: (B, L, D)
            state = states[:, -1]
        return self._gate_and_project(torch.cat(outputs, dim=1), u, z)

    def _recurrent(self, x: Tensor) -> Tensor:
        state = self.init_state(x.shape[0], x.device, x.dtype)
        outputs = []
        for t in range(x.shape[1]):
            output, state = self.step(x[:, t], state)
            outputs.append(output)
        return torch.stack(outputs, dim=1)

    # --- streaming -----------------------------------------------------------------------------

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MixerState:
        """(conv window of the last d_conv − 1 inputs (B, D, d_conv − 1), h (B, D, N) float32)."""
        window = self.conv.init_state(batch, device, dtype)
        h = torch.zeros(batch, self.d_inner, self.options.d_state, device=device)
        return window, h

    def step(self, x: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:  # x: (B, E)
        window, h = state
        u, z = self.in_proj(x).chunk(2, dim=-1)  # each (B, D)
        u, window = self.conv.step(u, window)
        u = F.silu(u)
        delta, b, c = self._selection(u)  # (B, D), (B, N), (B, N)
        drive = (delta * u.float()).unsqueeze(-1) * b.unsqueeze(1)  # Δ B x: (B, D, N)
        h = self._decay(delta) * h + drive
        y = (h * c.unsqueeze(1)).sum(-1)  # C·h: (B, D)
        return self._gate_and_project(y, u, z), (window, h)

    def state_size(self, length: int) -> int:
        return self.d_inner * (self.options.d_state + self.options.d_conv - 1)
