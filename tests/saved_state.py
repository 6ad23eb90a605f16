"""What a run's newest checkpoint holds, read straight from its files (``safetensors`` and
``json``, not iclab's loader), so tests can compare two runs by state rather than by logged
losses alone, and a failure names the tensor that differs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file


@dataclass(frozen=True)
class SavedState:
    step: int
    model: dict[str, torch.Tensor]  # model.safetensors: parameter name → weights
    optimizer: dict[str, torch.Tensor]  # optimizer.safetensors: state.I.exp_avg, ….step, …
    optimizer_rest: dict[str, Any]  # meta.json "optimizer": param groups, non-tensor state
    rng: dict[str, Any]  # meta.json "rng": the global torch random states, base64


def final_state(run_dir: Path) -> SavedState:
    """The state saved in the newest ``step-*`` directory of ``run_dir/checkpoints``."""
    newest = max((run_dir / "checkpoints").glob("step-*"), key=lambda path: path.name)
    meta = json.loads((newest / "meta.json").read_text())
    return SavedState(
        step=meta["step"],
        model=load_file(str(newest / "model.safetensors")),
        optimizer=load_file(str(newest / "optimizer.safetensors")),
        optimizer_rest=meta["optimizer"],
        rng=meta["rng"],
    )


def unequal_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that are not bitwise equal (values, dtype and shape)."""
    assert first.keys() == second.keys(), f"tensor names differ: {first.keys() ^ second.keys()}"
    return [name for name in first if not torch.equal(first[name], second[name])]


# (This module is not a test module, so pytest does not rewrite its asserts: they say what
# differs themselves.)


def assert_bitwise_equal(first: SavedState, second: SavedState) -> None:
    assert first.step == second.step, f"steps {first.step} and {second.step}"
    differing = unequal_tensors(first.model, second.model)
    assert not differing, f"model tensors differ: {differing}"
    differing = unequal_tensors(first.optimizer, second.optimizer)
    assert not differing, f"optimizer tensors differ: {differing}"
    assert first.optimizer_rest == second.optimizer_rest, "optimizer param groups differ"
    differing = [
        key
        for key in first.rng.keys() | second.rng.keys()
        if first.rng.get(key) != second.rng.get(key)
    ]
    assert not differing, f"random states differ: {differing}"


def assert_close(first: SavedState, second: SavedState, rtol: float) -> None:
    """Weights and optimizer moments equal to a relative error ``rtol`` of each tensor's
    largest entry (so an entry near zero is held to its tensor's precision, not its own);
    step counters and optimizer settings exactly."""
    assert first.step == second.step, f"steps {first.step} and {second.step}"
    assert first.optimizer_rest == second.optimizer_rest, "optimizer param groups differ"
    for own, other in ((first.model, second.model), (first.optimizer, second.optimizer)):
        assert own.keys() == other.keys(), f"tensor names differ: {own.keys() ^ other.keys()}"
        for name in own:
            torch.testing.assert_close(
                own[name],
                other[name],
                rtol=rtol,
                atol=rtol * other[name].abs().max().item(),
                msg=lambda text, name=name: f"{name}: {text}",
            )
    steps = [name for name in first.optimizer if name.endswith(".step")]
    assert steps, "no optimizer step counters saved"
    differing = [n for n in steps if not torch.equal(first.optimizer[n], second.optimizer[n])]
    assert not differing, f"optimizer step counters differ: {differing}"
