"""``iclab compare``: several runs side by side.

Runs of one task are evaluated together, their models and the algorithms on the very same
prompts, so the difference between two models comes with its own paired interval. Runs of
different tasks cannot share prompts: their newest evaluations are overlaid instead, with a
warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iclab.config import RunConfig
from iclab.errors import ConfigError, RunNotFoundError
from iclab.evaluation.curves import (
    Evaluation,
    read_curves_csv,
    write_curves_csv,
    write_differences_csv,
)
from iclab.kinds import kind_of
from iclab.report.compare import ComparedRun, EvaluatedRun, comparison_curves, unique_label
from iclab.report.plots import plot_curves
from iclab.run.directory import RunDir
from iclab.run.evaluation import (
    evaluate_config,
    evaluation_points,
    load_trained_model,
    plot_name,
    with_eval_overrides,
)


@dataclass(frozen=True)
class Comparison:
    """The runs compared, their curves and, when they share a task, the paired differences of
    every model to the reference run's."""

    config: RunConfig  # the first run's, whose task and eval settings the comparison used
    runs: list[ComparedRun]
    evaluation: Evaluation
    reference: str | None  # None when the runs could not be evaluated on the same prompts

    @property
    def paired(self) -> bool:
        return self.reference is not None


def task_key(config: RunConfig) -> tuple:
    """What must match for runs to be evaluated on the same prompts."""
    task = config.task
    return (task.name, task.n_dims, tuple(sorted(task.options.items())))


def compare_runs(
    paths: Sequence[Path],
    out: Path,
    algorithms: Sequence[str] | None = None,
    reference: str | None = None,
    overrides: Sequence[str] = (),
    show_progress: bool = False,
) -> Comparison:
    """Compare the runs at ``paths`` and write ``OUT/curves.csv``, ``differences.csv`` and a
    figure per shift. ``reference`` names a run (its label or path; default the first);
    ``overrides`` are ``eval.*`` settings for the joint evaluation."""
    if not paths:
        raise ConfigError("give at least one RUN directory to compare")
    labels = [unique_label(path, paths) for path in paths]
    configs = [RunDir(path).load_config() for path in paths]
    first = configs[0]
    if len({task_key(config) for config in configs}) > 1:
        evaluation, chosen = overlaid(paths, configs, algorithms), None
    else:
        chosen = reference_label(reference, paths, labels)
        evaluation = evaluated_together(
            paths, labels, first, algorithms, chosen, overrides, show_progress
        )
    runs = [
        described(path, label, config)
        for path, label, config in zip(paths, labels, configs, strict=True)
    ]
    write(evaluation, out, first, labels)
    return Comparison(first, runs, evaluation, chosen)


def reference_label(reference: str | None, paths: Sequence[Path], labels: list[str]) -> str:
    if reference is None:
        return labels[0]
    for path, label in zip(paths, labels, strict=True):
        if reference in (label, str(path), str(Path(path))):
            return label
    raise ConfigError(
        f"--reference {reference!r} is none of the compared runs ({', '.join(labels)})"
    )


def evaluated_together(
    paths: Sequence[Path],
    labels: list[str],
    config: RunConfig,
    algorithms: Sequence[str] | None,
    reference: str,
    overrides: Sequence[str],
    show_progress: bool,
) -> Evaluation:
    """Every run's model (named by its label) and the algorithms on the same fresh prompts of
    the first run's task and eval settings, with paired differences to ``reference``."""
    changes = [*overrides, f"eval.reference={reference}"]
    if algorithms is not None:
        changes.append(f"eval.algorithms=[{', '.join(algorithms)}]")
    config = with_eval_overrides(config, changes, "iclab compare")
    models = []
    for path, label in zip(paths, labels, strict=True):
        model = load_trained_model(path)
        model.check_points(evaluation_points(config))
        model.name = label
        models.append(model)
    return evaluate_config(config, models, show_progress)


def overlaid(
    paths: Sequence[Path], configs: list[RunConfig], algorithms: Sequence[str] | None
) -> Evaluation:
    """The newest evaluations of runs of different tasks, overlaid (no paired differences)."""
    warnings.warn(
        "the runs were trained on different tasks ("
        + ", ".join(
            f"{unique_label(p, paths)}: {c.task.name} d={c.task.n_dims}"
            for p, c in zip(paths, configs, strict=True)
        )
        + "): their newest evaluations are overlaid, with no paired differences",
        stacklevel=3,
    )
    evaluated = []
    for path, config in zip(paths, configs, strict=True):
        latest = RunDir(path).latest_evaluation()
        if latest is None:
            raise RunNotFoundError(f"{path} has not been evaluated: run `iclab eval {path}` first")
        curves = read_curves_csv(latest / "curves.csv")
        evaluated.append(EvaluatedRun(unique_label(path, paths), config, curves))
    return Evaluation(comparison_curves(evaluated, algorithms), [])


def described(path: Path, label: str, config: RunConfig) -> ComparedRun:
    """A run's size, training steps and state size at its evaluation length."""
    info = RunDir(path).read_info()
    width = info.get("d_model", config.model.d_model)
    model = config.updated(model={"d_model": width, "target_params": None}).build_model()
    return ComparedRun(
        label=label,
        n_params=info.get("n_params"),
        steps=info.get("steps"),
        state_size=model.state_size(evaluation_points(config)),
    )


def write(evaluation: Evaluation, out: Path, config: RunConfig, labels: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_curves_csv(evaluation.curves, out / "curves.csv")
    write_differences_csv(evaluation.differences, out / "differences.csv")
    task = config.task
    kind = kind_of(task.build().kind)
    names = ", ".join(labels)
    points = evaluation.curves
    for shift in dict.fromkeys(p.shift for p in points):
        title = f"{names}: {task.name}" + ("" if shift == "none" else f"\nshift: {shift}")
        shifted = [p for p in points if p.shift == shift]
        plot_curves(
            shifted, out / plot_name(shift), title, kind.metric.label, kind.reference_k(task.n_dims)
        )
