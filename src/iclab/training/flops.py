"""Throughput accounting: FLOPs of a training step, the device's peak, and their ratio (MFU).

The step count follows PaLM (Chowdhery et al. 2022, arXiv 2204.02311, appendix B): a token
costs 6·N FLOPs for the N parameters it multiplies (2·N forward, 4·N backward), plus what each
mixer spends across positions (12·E·T for the scores of a softmax-attention layer).
MFU is then achieved FLOP/s over the device's dense peak, so it compares runs across mixers,
sizes and machines without counting recomputation or padding as useful work.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import torch
from torch import nn

from iclab.errors import ConfigError
from iclab.models import InContextModel

PEAK_ENV = "ICLAB_PEAK_TFLOPS"


def matmul_params(model: nn.Module) -> int:
    """Parameters that multiply activations: the weights of linear maps (the codec's read-in and
    read-out included), of convolutions and of recurrent cells' input and hidden matrices.

    Not counted: embedding and position tables (lookups, no multiplication), biases, norm scales
    and a mixer's elementwise parameters (Mamba's A and D), which add O(1) FLOPs per parameter.
    """
    total = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            total += module.weight.numel()
        elif isinstance(module, nn.RNNBase):
            total += sum(
                weight.numel()
                for name, weight in module.named_parameters(recurse=False)
                if name.startswith("weight_")
            )
    return total


def training_flops_per_step(model: InContextModel, batch_size: int, n_points: int) -> float:
    """FLOPs of one optimizer step (forward + backward, 3 × forward) on ``batch_size`` prompts
    of ``n_points`` examples.

    Per token: 6·N for the N matmul parameters (``matmul_params``) plus what each mixer spends
    mixing positions (``Mixer.sequence_flops``: PaLM's 12·E·T for a softmax layer of width E
    over T tokens, 0 for mixers whose state update is O(state) per token). PaLM counts the full
    T × T attention matrix: causal masking makes only half of it useful, so a kernel that skips
    the masked half does about 6·E·T of real work.

    The codec's read-out acts at the x positions only (half the tokens in interleaved prompts)
    and the read-in needs no input gradient, so the count is high by at most 3 × their
    parameters per token; the optimizer update (O(N) per step) is left out, as in PaLM.
    """
    if n_points < 1:
        raise ValueError(f"n_points must be at least 1, got {n_points}")
    length = model.codec.tokens_per_example * n_points  # T
    mixing = sum(block.mixer.sequence_flops(length) for block in model.backbone.blocks)
    return float((6 * matmul_params(model) + mixing) * batch_size * length)


class Peak(NamedTuple):
    """Dense (no 2:4 sparsity) peak FLOP/s of a GPU by matmul arithmetic."""

    bfloat16: float
    tf32: float
    float32: float  # CUDA cores, when TF32 is off


# NVIDIA's datasheets list tensor-core throughput with 2:4 sparsity; these are half of that.
# H100 SXM and H200 SXM (the same GH100 compute): H100 datasheet (nvidia.com/en-us/data-center/
# h100) BF16 1,979* / TF32 989* / FP32 67 TFLOPS; H100 PCIe 1,513* / 756* / 51; exact figures
# from the Hopper whitepaper (989.4 / 494.7 / 66.9 for SXM5). A100 datasheet (SXM and PCIe):
# BF16 312 / TF32 156 / FP32 19.5. L4 datasheet: BF16 242* / TF32 120* / FP32 30.3. RTX 4090:
# Ada Lovelace architecture whitepaper, appendix A: BF16 (FP32 accumulate) 165.2 / TF32 82.6 /
# FP32 82.6. NVL variants (lower clocks) and the A10G (no public datasheet) are left unknown.
KNOWN_PEAKS: tuple[tuple[str, Peak | None], ...] = (
    (r"H[12]00 NVL", None),
    (r"H100 PCIe", Peak(756e12, 378e12, 51.2e12)),
    (r"H100|H200", Peak(989.4e12, 494.7e12, 66.9e12)),
    (r"A100", Peak(312e12, 156e12, 19.5e12)),
    (r"\bL4\b", Peak(121e12, 60e12, 30.3e12)),
    (r"RTX 4090", Peak(165.2e12, 82.6e12, 82.6e12)),
)

MATH_MODES = Peak._fields


def device_peak(name: str, math: str) -> float | None:
    """The dense peak FLOP/s of the GPU called ``name`` (as ``torch.cuda.get_device_name``
    gives it) for ``math`` in bfloat16, tf32 or float32; None when the GPU is not known."""
    if math not in MATH_MODES:
        raise ValueError(f"math {math!r}: allowed {', '.join(MATH_MODES)}")
    for pattern, peak in KNOWN_PEAKS:
        if re.search(pattern, name):
            return None if peak is None else getattr(peak, math)
    return None


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s to measure MFU against, for training at ``precision`` (``train.precision``).

    ``ICLAB_PEAK_TFLOPS`` overrides it on any device; otherwise a known CUDA device gives its
    datasheet figure (float32 means TF32 matmuls when ``torch.backends.cuda.matmul.allow_tf32``
    is on, as the trainer sets it on CUDA) and anything else None: a CPU's peak depends on cores,
    clocks and vector units that torch does not report.
    """
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision {precision!r}: allowed float32, bfloat16")
    override = os.environ.get(PEAK_ENV)
    if override is not None:
        try:
            tflops = float(override)
        except ValueError:
            tflops = 0.0
        if not tflops > 0:
            raise ConfigError(f"{PEAK_ENV}={override!r}: expected a positive number of TFLOP/s")
        return tflops * 1e12
    if device.type != "cuda":
        return None
    math = precision
    if precision == "float32" and torch.backends.cuda.matmul.allow_tf32:
        math = "tf32"
    return device_peak(torch.cuda.get_device_name(device), math)
