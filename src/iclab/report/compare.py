"""Several evaluated runs side by side: their models' curves and the algorithms', per shift."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from iclab.config import RunConfig
from iclab.errors import ConfigError
from iclab.evaluation.curves import CurvePoint


@dataclass(frozen=True)
class EvaluatedRun:
    """A run's label (its directory name), config and evaluated curves."""

    label: str
    config: RunConfig
    curves: list[CurvePoint]


def comparison_curves(
    runs: Sequence[EvaluatedRun], algorithms: Sequence[str] | None = None
) -> list[CurvePoint]:
    """Every run's model curves, renamed after the run, then the algorithms' curves (each
    algorithm once per shift, from the first run that evaluated it so; only ``algorithms`` when
    given).

    Runs must score the same metric; runs of different tasks are compared with a warning,
    since their curves then measure different things.
    """
    if not runs:
        raise ConfigError("give at least one RUN directory to compare")
    models: list[CurvePoint] = []
    baselines: dict[tuple[str, str], tuple[str, list[CurvePoint]]] = {}  # from the first run
    tasks, metrics = {}, set()
    for run in runs:
        points = run.curves
        tasks[run.label] = (run.config.task.name, run.config.task.n_dims)
        metrics |= {p.metric for p in points}
        model = points[0].learner  # a run's table lists its model first
        models += [replace(p, learner=run.label) for p in points if p.learner == model]
        for point in points:
            if point.learner == model or (algorithms and point.learner not in algorithms):
                continue
            source, rows = baselines.setdefault((point.learner, point.shift), (run.label, []))
            if source == run.label:
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
