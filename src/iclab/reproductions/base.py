"""What every reproduction provides: a paper's headline claim, the runs that test it at a CPU or a
paper scale, a figure like the paper's, and an honest verdict.

``iclab reproduce NAME --scale cpu|paper`` writes ``OUT/NAME/``: the runs (normal run
directories, resumed after a crash and not retrained when complete), ``figure.png`` and
``verdict.json`` (the claim in one sentence, the measured quantity, the threshold that decides,
``reproduced | not reproduced | inconclusive`` and the numbers).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from iclab import __version__
from iclab.config import RunConfig
from iclab.evaluation.curves import CurvePoint, PairedDifference, read_curves_csv
from iclab.evaluation.run_eval import evaluate_run
from iclab.io import atomic_write_text
from iclab.registry import Registry
from iclab.run import RunDir
from iclab.training.trainer import train_run

Scale = Literal["cpu", "paper"]
Outcome = Literal["reproduced", "not reproduced", "inconclusive"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of a reproduction, as ``verdict.json`` holds it."""

    reproduction: str
    paper: str
    claim: str
    quantity: str
    threshold: str
    verdict: Outcome
    numbers: dict[str, float] = field(default_factory=dict)
    scale: str = "cpu"


class Reproduction(ABC):
    """One paper's claim. Subclasses set the class attributes and implement ``run``, which
    trains and evaluates what it needs under ``out`` (with ``trained`` / ``evaluated``, so a rerun
    resumes), saves ``out/figure.png`` and returns the verdict."""

    name: ClassVar[str] = "unregistered"  # set by @register_reproduction
    paper: ClassVar[str]
    claim: ClassVar[str]
    cpu_minutes: ClassVar[float]  # measured on the 2-core dev machine, for `iclab reproductions`

    @abstractmethod
    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        """Train, evaluate, draw the figure and decide."""


REPRODUCTIONS: Registry[type[Reproduction]] = Registry("reproduction")
register_reproduction = REPRODUCTIONS.register


def trained(config: RunConfig, run_dir: Path, show_progress: bool = True) -> RunDir:
    """The run of ``config`` in ``run_dir``: trained, continued after a crash, or, when it is
    already complete, left as it is."""
    run = RunDir(run_dir)
    info = run.read_info()
    if info.get("status") == "completed" and info.get("steps") == config.train.steps:
        return run
    train_run(config, run.path, resume=run.exists(), show_progress=show_progress)
    return run


def evaluated(run: RunDir, n_prompts: int | None = None) -> list[CurvePoint]:
    """The run's curves: read back when eval/curves.csv is newer than its last checkpoint,
    evaluated otherwise."""
    table = run.eval_dir / "curves.csv"
    checkpoints = [path.stat().st_mtime for path in run.checkpoints.glob("*/meta.json")]
    if table.exists() and table.stat().st_mtime >= max(checkpoints, default=0.0):
        return read_curves_csv(table)
    return evaluate_run(run.path, n_prompts=n_prompts).curves


def reproduce(name: str, out: Path, scale: Scale = "cpu", show_progress: bool = True) -> Verdict:
    """Run reproduction ``name`` in ``out/name`` and write its ``verdict.json``."""
    reproduction = REPRODUCTIONS.get(name)()
    directory = Path(out) / name
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    verdict = reproduction.run(directory, scale, show_progress)
    record = {
        **asdict(verdict),
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "iclab": __version__,
    }
    atomic_write_text(directory / "verdict.json", json.dumps(record, indent=2) + "\n")
    return verdict


def curve(points: list[CurvePoint], learner: str, shift: str = "none") -> dict[int, CurvePoint]:
    """One learner's curve, by k."""
    return {p.k: p for p in points if p.learner == learner and p.shift == shift}


def late_average(
    rows: Iterable[CurvePoint | PairedDifference], first_k: int
) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) averaged over the rows with k ≥ ``first_k`` (the interval's ends
    averaged too, a conservative band for the late part of a curve)."""
    late = [row for row in rows if row.k >= first_k]
    if not late:
        raise ValueError(f"no prefix length k ≥ {first_k} was evaluated")
    mean, low, high = (
        sum(getattr(row, end) for row in late) / len(late) for end in ("mean", "ci_low", "ci_high")
    )
    return mean, low, high
