"""Optional GPU kernels: flash-linear-attention's Triton kernels for the linear-attention family.

With the extra ``[gpu]`` installed (``fla-core``) and CUDA inputs, the chunked form of the mixers
whose option ``kernel`` is true (the default) calls these kernels. The pure-PyTorch forms stay
the reference and the CPU path; ``tests/test_gpu_kernels.py`` checks, on a GPU, that both agree.
The adapters take and return iclab's (B, H, T, D) layout; fla works in (B, T, H, D).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
from torch import Tensor


@functools.cache
def fla_ops() -> SimpleNamespace | None:
    """flash-linear-attention's chunked kernels, or None where it is not installed."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.simple_gla import chunk_simple_gla
    except ImportError:
        return None
    return SimpleNamespace(chunk_simple_gla=chunk_simple_gla, chunk_delta_rule=chunk_delta_rule)


def kernel_applies(wanted: bool, x: Tensor, gated: bool = False) -> bool:
    """Whether to call a kernel: asked for, CUDA input, fla installed, and for decayed (gated)
    attention a Triton that fla trusts on this GPU."""
    if not (wanted and x.is_cuda and fla_ops() is not None):
        return False
    return not gated or gated_kernel_is_correct()


@functools.cache
def gated_kernel_is_correct() -> bool:
    """fla refuses the backward pass of its gated kernels on Hopper GPUs with Triton from 3.4.0
    up to 3.7.1, which give wrong gradients there (fla issue #640); those fall back to the
    pure-PyTorch chunked form."""
    from fla.utils import IS_NVIDIA_HOPPER, TRITON_ABOVE_3_4_0, TRITON_ABOVE_3_7_1

    return not (IS_NVIDIA_HOPPER and TRITON_ABOVE_3_4_0 and not TRITON_ABOVE_3_7_1)


def to_fla(x: Tensor) -> Tensor:  # (B, H, T, D) → (B, T, H, D), contiguous
    return x.transpose(1, 2).contiguous()


def linear_attention_kernel(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor:
    """o_t = Σ_{s≤t} exp(G_t − G_s)(q_t·k_s) v_s by fla's ``chunk_simple_gla`` (a scalar log
    decay per head and step; none is plain linear attention): (B, H, T, D) in and out."""
    value_dim = v.shape[-1]
    if value_dim % 2:  # fla's bfloat16 backward wants even widths: a zero column changes nothing
        v = torch.nn.functional.pad(v, (0, 1))
    g = None if log_decay is None else log_decay.transpose(1, 2).float().contiguous()  # (B, T, H)
    out, _ = fla_ops().chunk_simple_gla(to_fla(q), to_fla(k), to_fla(v), g=g, scale=1.0)
    return out.transpose(1, 2)[..., :value_dim]


def delta_rule_kernel(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, dtype: torch.dtype) -> Tensor:
    """The delta rule by fla's ``chunk_delta_rule``, which computes in bfloat16 only: ``dtype``
    (the mixer input's, bfloat16 or float16) is the precision it runs in. (B, H, T, D) in and
    out, in float32 like the pure form."""
    q, k, v = (to_fla(x).to(dtype) for x in (q, k, v))
    out, _ = fla_ops().chunk_delta_rule(
        q, k, v, beta.transpose(1, 2).to(dtype).contiguous(), scale=1.0
    )
    return out.transpose(1, 2).float()
