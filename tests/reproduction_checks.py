"""What a reproduction's verdict.json must hold whatever its verdict: shared by the smoke-scale
contract test and the slow CPU-scale tests, which check numbers and never a particular verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

from iclab import __version__
from iclab.reproductions import REPRODUCTIONS
from iclab.reproductions.base import OUTCOMES

FIELDS = {"reproduction", "paper", "claim", "quantity", "threshold", "verdict", "numbers", "scale"}


def recorded_verdict(out: Path, name: str, scale: str) -> dict:
    """``OUT/NAME/verdict.json``, checked: every field, the class's own claim, the scale, finite
    numbers, an allowed outcome that ``decide`` gives again from the recorded numbers alone, and
    a figure beside it."""
    directory = Path(out) / name
    record = json.loads((directory / "verdict.json").read_text())
    reproduction = REPRODUCTIONS.get(name)
    assert FIELDS | {"minutes", "environment"} <= set(record)
    assert isinstance(record["minutes"], float) and record["minutes"] >= 0
    assert record["environment"]["iclab"] == __version__
    assert (record["reproduction"], record["claim"]) == (name, reproduction.claim)
    assert record["scale"] == scale
    numbers = record["numbers"]
    assert numbers, "a verdict without numbers"
    for key, value in numbers.items():
        assert type(value) in (int, float) and math.isfinite(value), (key, value)
    assert record["verdict"] in OUTCOMES
    assert reproduction.decide(numbers) == record["verdict"]
    assert (directory / "figure.png").stat().st_size > 10_000
    return record


def smoke_runs(tmp_path_factory, names: tuple[str, ...]) -> Path:
    """The named reproductions run once at smoke scale under one fresh directory, returned."""
    from iclab.reproductions import reproduce

    out = tmp_path_factory.mktemp("smoke")
    for name in names:
        reproduce(name, out, "smoke", show_progress=False)
    return out
