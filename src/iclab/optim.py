"""torch's Adam and AdamW, called so that they do not import torch._dynamo.

Every ``torch.optim.Optimizer`` method a training loop calls (``add_param_group`` when it is
built, ``step``, ``zero_grad``, ``state_dict``, ``load_state_dict``) is wrapped to stay out of
graphs that torch.compile traces, and the wrappers import ``torch._dynamo`` on their first call,
and with it sympy and mpmath: a second of start-up and about 70 MB of resident memory, in a
process whose training step at the quickstart's size needs about 60 MB of activations
(benchmarks/RESULTS.md, "Peak memory without torch._dynamo"). iclab never traces an optimizer
(``train.compile`` compiles the model only), so these classes call torch's own methods under
those wrappers: the same update, state and state dict, from the same kernels. On a torch whose
methods are not wrapped they are called as they are. ``inspect.unwrap`` removes every wrapper of
a method, so tests/test_training.py compares these optimizers with torch's bit for bit: a torch
release that wraps them for another purpose fails it rather than changing training silently.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.optim import Optimizer


class WithoutDynamo:
    """Mixed into a ``torch.optim`` optimizer class: its methods without their dynamo wrappers."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        inspect.unwrap(Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        inspect.unwrap(Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return inspect.unwrap(Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        inspect.unwrap(Optimizer.load_state_dict)(self, state_dict)

    @torch.no_grad()  # what the wrapper of the optimizer's step did (differentiable=False)
    def step(self, closure: Any = None) -> Any:
        return inspect.unwrap(super().step)(self, closure)  # the optimizer's own step


class Adam(WithoutDynamo, torch.optim.Adam):
    """``torch.optim.Adam`` without the torch._dynamo import."""


class AdamW(WithoutDynamo, torch.optim.AdamW):
    """``torch.optim.AdamW`` without the torch._dynamo import."""


def adamw(groups: list[dict[str, Any]], **options: Any) -> AdamW:
    """AdamW fused into one kernel over every parameter where this torch has the kernel for the
    parameters' device (CUDA; CPU from torch 2.4 on: 3× faster than the per-parameter loop
    there), else one op per kind for all parameters (foreach). The same update and state."""
    try:  # copies: the optimizer writes its defaults into the groups it is given
        return AdamW([dict(g) for g in groups], fused=True, **options)
    except RuntimeError:  # "`fused=True` requires all the params to be ... of supported devices"
        return AdamW([dict(g) for g in groups], foreach=True, **options)
