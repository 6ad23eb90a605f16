"""Several runs side by side: their models' curves and the algorithms' per shift, and, when the
runs share a task, whether one model is better than another on the very same prompts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from iclab.config import RunConfig
from iclab.errors import ConfigError
from iclab.evaluation.curves import CurvePoint, PairedDifference
from iclab.kinds import Metric
from iclab.report.pivot import TRAINING_SHIFT
from iclab.report.summary import judged


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


@dataclass(frozen=True)
class ComparedRun:
    """What a comparison shows of each run beside its curve."""

    label: str
    n_params: int | None
    steps: int | None
    state_size: int  # floats per sequence at the evaluated prompt length, all layers


def default_ks(
    curves: Sequence[CurvePoint], models: Sequence[str], n_dims: int | None
) -> list[int]:
    """Where to read a comparison: the k at which the models' curves are furthest apart, and,
    for regression, d and 2d (least squares is exact from d on)."""
    rows = [p for p in curves if p.shift == TRAINING_SHIFT and p.learner in models]
    means: dict[int, list[float]] = {}
    for point in rows:
        means.setdefault(point.k, []).append(point.mean)
    if not means:
        return []
    widest = max(sorted(means), key=lambda k: max(means[k]) - min(means[k]))
    wanted = [widest]
    if rows[0].metric == "error" and n_dims is not None:
        wanted += [n_dims, 2 * n_dims]
    return sorted(k for k in set(wanted) if k in means)


def pair_sentences(
    differences: Sequence[PairedDifference],
    models: Sequence[str],
    ks: Sequence[int],
    metric: Metric,
) -> list[str]:
    """``wide − small at k=3: -0.120 [-0.150, -0.090], wide better`` for every model against the
    reference run, at each of ``ks``, on the training distribution."""
    lines = []
    for difference in differences:
        if difference.shift != TRAINING_SHIFT or difference.learner not in models:
            continue
        if difference.k not in ks:
            continue
        lines.append(
            f"{difference.learner} − {difference.reference} at k={difference.k}: "
            f"{judged(difference, metric)}"
        )
    return lines


def never_learned(
    curves: Sequence[CurvePoint], model: str, chance: float | None, metric: Metric
) -> bool:
    """Whether ``model`` is nowhere clearly better than a learner that ignores its context: at
    every k its 95% interval reaches within a quarter of ``chance`` (or past it). A quarter,
    not less: on a few hundred prompts even the zero predictor's measured error strays 20% from
    its expected 1, while a model that learned anything in context is far below at late k."""
    if chance is None:
        return False
    rows = [p for p in curves if p.learner == model and p.shift == TRAINING_SHIFT]
    margin = 0.25 * chance
    if metric.higher_is_better:
        return bool(rows) and all(p.ci_low <= chance + margin for p in rows)
    return bool(rows) and all(p.ci_high >= chance - margin for p in rows)
