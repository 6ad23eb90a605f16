"""Several evaluated runs side by side: their models' curves and the algorithms', per shift."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from iclab.config import ConfigError
from iclab.evaluation.curves import CurvePoint, read_curves_csv, write_curves_csv
from iclab.evaluation.run_eval import plot_name
from iclab.metrics import METRICS
from iclab.report.plots import plot_curves
from iclab.run import RunDir


def comparison_curves(
    runs: Sequence[Path], algorithms: Sequence[str] | None = None
) -> list[CurvePoint]:
    """Every run's model curves, renamed after the run, then the algorithms' curves (each
    algorithm once per shift, from the first run that evaluated it so; only ``algorithms`` when
    given).

    Runs must have been evaluated and must score the same metric; runs of different tasks are
    compared with a warning, since their curves then measure different things.
    """
    if not runs:
        raise ConfigError("give at least one RUN directory to compare")
    models: list[CurvePoint] = []
    baselines: dict[tuple[str, str], tuple[Path, list[CurvePoint]]] = {}  # from the first run
    tasks, metrics = {}, set()
    for path in runs:
        run = RunDir(path)
        config = run.load_config()
        table = run.eval_dir / "curves.csv"
        if not table.exists():
            raise ConfigError(f"{path} has not been evaluated: run `iclab eval {path}` first")
        points = read_curves_csv(table)
        label = unique_label(path, runs)
        tasks[label] = (config.task.name, config.task.n_dims)
        metrics |= {p.metric for p in points}
        run_learners = list(dict.fromkeys(p.learner for p in points))
        model = run_learners[0]  # a run's table lists its model first
        models += [replace(p, learner=label) for p in points if p.learner == model]
        for point in points:
            if point.learner == model or (algorithms and point.learner not in algorithms):
                continue
            source, rows = baselines.setdefault((point.learner, point.shift), (path, []))
            if source == path:
                rows.append(point)
    if len(metrics) > 1:
        raise ConfigError(f"the runs score different metrics ({', '.join(sorted(metrics))})")
    if len(set(tasks.values())) > 1:
        listing = ", ".join(f"{label}: {name} d={d}" for label, (name, d) in tasks.items())
        warnings.warn(f"the runs were trained on different tasks ({listing})", stacklevel=2)
    missing = set(algorithms or ()) - {name for name, _ in baselines}
    if missing:
        raise ConfigError(f"no run evaluated the algorithm(s) {', '.join(sorted(missing))}")
    return models + [point for _, rows in baselines.values() for point in rows]


def unique_label(path: Path, runs: Sequence[Path]) -> str:
    """A run's directory name, or its path when two compared runs share a name."""
    names = [Path(run).name for run in runs]
    return Path(path).name if names.count(Path(path).name) == 1 else str(path)


def write_comparison(
    runs: Sequence[Path], out: Path, algorithms: Sequence[str] | None = None
) -> list[CurvePoint]:
    """``OUT/curves.csv`` and one figure per shift (``OUT/curves.png``, ``curves-SHIFT.png``)."""
    points = comparison_curves(runs, algorithms)
    out.mkdir(parents=True, exist_ok=True)
    write_curves_csv(points, out / "curves.csv")
    first = RunDir(runs[0]).load_config().task
    label = METRICS[first.build().kind].label
    marker = first.n_dims if points[0].metric == "error" else None
    names = ", ".join(unique_label(run, runs) for run in runs)
    for shift in dict.fromkeys(p.shift for p in points):
        title = f"{names}: {first.name}" + ("" if shift == "none" else f"\nshift: {shift}")
        shifted = [p for p in points if p.shift == shift]
        plot_curves(shifted, out / plot_name(shift), title, label, marker)
    return points
