"""On a GPU with flash-linear-attention installed: its kernels equal the pure-PyTorch forms.

Skipped, with the reason, where there is no CUDA device or no ``fla`` package (CI, laptops):
these run when a GPU is lent (see benchmarks/RESULTS.md for the recorded run).
"""

from __future__ import annotations

import pytest
import torch

from iclab.models.mixers.kernels import fla_ops, gated_kernel_is_correct
from test_mixers import assert_same, build

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or fla_ops() is None,
    reason="needs a CUDA GPU and flash-linear-attention (pip install 'iclab[gpu]')",
)

SPECS = ["linear_attention", "linear_self_attention", "gla", "retention", "deltanet"]
GATED = {"gla", "retention"}


def outputs_and_gradients(mixer, x):
    x = x.clone().requires_grad_(True)
    out = mixer(x)
    out.float().square().mean().backward()
    return out.detach().float(), x.grad.float()


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("length", [37, 1000])
def test_kernel_equals_the_pure_chunked_form(spec, length):
    if spec in GATED and not gated_kernel_is_correct():
        pytest.skip("fla disables its gated backward on Hopper with Triton < 3.7.1 (fla #640)")
    # fla's delta-rule kernel has no float32 version; the others run in float32 (TF32 dots).
    dtype = torch.bfloat16 if spec == "deltanet" else torch.float32
    tolerance = 3e-2 if dtype == torch.bfloat16 else 5e-3
    x = torch.randn(4, length, 128, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    x = x.to(dtype)
    results = []
    for kernel in (True, False):
        mixer = build(spec, width=128, heads=4, kernel=kernel).to("cuda", dtype)
        results.append(outputs_and_gradients(mixer, x))
    (out_kernel, grad_kernel), (out_pure, grad_pure) = results
    assert_same(out_kernel, out_pure, tolerance)
    assert_same(grad_kernel, grad_pure, tolerance)
