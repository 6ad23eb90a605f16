"""``iclab compare``: read several evaluated runs, write their curves side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from iclab.errors import RunNotFoundError
from iclab.evaluation.curves import CurvePoint, read_curves_csv, write_curves_csv
from iclab.kinds import kind_of
from iclab.report.compare import EvaluatedRun, comparison_curves, unique_label
from iclab.report.plots import plot_curves
from iclab.run.directory import RunDir
from iclab.run.evaluation import plot_name


def read_evaluated(path: Path, runs: Sequence[Path]) -> EvaluatedRun:
    run = RunDir(path)
    config = run.load_config()
    latest = run.latest_evaluation()
    if latest is None:
        raise RunNotFoundError(f"{path} has not been evaluated: run `iclab eval {path}` first")
    return EvaluatedRun(unique_label(path, runs), config, read_curves_csv(latest / "curves.csv"))


def write_comparison(
    runs: Sequence[Path], out: Path, algorithms: Sequence[str] | None = None
) -> list[CurvePoint]:
    """``OUT/curves.csv`` and one figure per shift (``OUT/curves.png``, ``curves-SHIFT.png``)."""
    evaluated = [read_evaluated(path, runs) for path in runs]
    points = comparison_curves(evaluated, algorithms)
    out.mkdir(parents=True, exist_ok=True)
    write_curves_csv(points, out / "curves.csv")
    task = evaluated[0].config.task
    kind = kind_of(task.build().kind)
    names = ", ".join(run.label for run in evaluated)
    for shift in dict.fromkeys(p.shift for p in points):
        title = f"{names}: {task.name}" + ("" if shift == "none" else f"\nshift: {shift}")
        shifted = [p for p in points if p.shift == shift]
        plot_curves(
            shifted, out / plot_name(shift), title, kind.metric.label, kind.reference_k(task.n_dims)
        )
    return points
