"""Evaluate a trained run, or algorithms alone, and write the tables and plots.

Every evaluation of a run is kept, in its own directory ``eval/NNN/``: what it used (the run's
``eval`` section with the overrides it was given, the checkpoint step, the date) in
``settings.yaml``, beside its tables and figures. Evaluating never changes the run's training
config, and a later evaluation never overwrites an earlier one; the newest is what commands
show by default.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from iclab.algorithms import build_algorithm
from iclab.config import RunConfig, apply_overrides, build_config, check_reference
from iclab.devices import resolve_device, set_threads
from iclab.errors import ConfigError
from iclab.evaluation.caches import (
    cached_learners,
    evicted_rows,
    kept_rows,
    write_cache_tables,
)
from iclab.evaluation.curves import (
    CurvePoint,
    Evaluation,
    evaluate,
    write_curves_csv,
    write_differences_csv,
)
from iclab.evaluation.shifts import resolve_shifts
from iclab.io import atomic_write_text, fsync_directory
from iclab.kinds import kind_of
from iclab.learner import InContextLearner
from iclab.metrics import condition_metric, condition_title
from iclab.models import InContextModel
from iclab.models.cached import CachedModel
from iclab.report.caches import kept_figure
from iclab.report.plots import plot_checkpoints, plot_curves, plot_training, save_figure
from iclab.run.directory import RunDir
from iclab.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    verify_checkpoint,
)


def newest_checkpoint(run: RunDir) -> Checkpoint:
    checkpoint = latest_valid_checkpoint(run.checkpoints)
    if checkpoint is None:
        raise CheckpointError(f"{run.path} has no valid checkpoint to evaluate")
    return checkpoint


def kept_steps(run_dir: Path) -> list[int]:
    """The steps of a run's valid checkpoints, oldest first (broken ones skipped with a
    warning, as resuming skips them)."""
    steps = []
    for checkpoint in list_checkpoints(RunDir(Path(run_dir)).checkpoints):
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError as error:
            warnings.warn(f"skipping checkpoint {checkpoint.path.name}: {error}", stacklevel=2)
            continue
        steps.append(checkpoint.step)
    return steps


def dropped_checkpoints_note(config: RunConfig) -> str | None:
    """A note when training dropped older checkpoints (``train.keep_checkpoints`` of them kept,
    fewer than it wrote), so "every checkpoint" is only the end of training; None otherwise."""
    train = config.train
    written = math.ceil(train.steps / train.checkpoint_every)
    if written <= train.keep_checkpoints:
        return None
    return (
        f"the run kept only its last {train.keep_checkpoints} of {written} checkpoints "
        f"(train.keep_checkpoints={train.keep_checkpoints}); to follow the whole of training, "
        f"train with --set train.keep_checkpoints={written}"
    )


def checked_steps(run_dir: Path, steps: Sequence[int] | None = None) -> list[int]:
    """The steps of ``steps`` (None: every valid checkpoint the run kept), oldest first, after
    checking that each is a valid checkpoint: a ``CheckpointError`` naming the kept steps
    otherwise, before anything is evaluated or probed."""
    path = Path(run_dir)
    kept = kept_steps(path)
    chosen = kept if steps is None else sorted(set(steps))
    missing = [step for step in chosen if step not in kept]
    if missing:
        listed = ", ".join(str(step) for step in kept) or "none"
        steps_text = ", ".join(str(step) for step in missing)
        raise CheckpointError(
            f"{path} has no valid checkpoint of step {steps_text}; steps kept: {listed}"
        )
    if not chosen:
        raise CheckpointError(f"{path} has no valid checkpoint")
    return chosen


def checkpoint_at(run: RunDir, step: int) -> Checkpoint:
    """The run's checkpoint of ``step``, verified; an error naming the steps it has."""
    found = {checkpoint.step: checkpoint for checkpoint in list_checkpoints(run.checkpoints)}
    if step not in found:
        kept = ", ".join(str(kept) for kept in sorted(found)) or "none"
        raise CheckpointError(f"{run.path} has no checkpoint of step {step}; steps kept: {kept}")
    verify_checkpoint(found[step])
    return found[step]


def load_trained_model(
    run_dir: Path, device: torch.device | str = "cpu", step: int | None = None
) -> InContextModel:
    """The model of the newest valid checkpoint of a run (or of ``step``), in eval mode."""
    run = RunDir(Path(run_dir))
    config = run.load_config()
    checkpoint = newest_checkpoint(run) if step is None else checkpoint_at(run, step)
    model = config.build_model()
    load_checkpoint(checkpoint, model, device=device)
    return model.to(device).eval()


def evaluation_points(config: RunConfig) -> int:
    """Examples per evaluation prompt: ``eval.n_points``, else the trained ``task.n_points``."""
    return config.eval.n_points or config.task.n_points


def with_eval_overrides(config: RunConfig, overrides: Sequence[str], source: str) -> RunConfig:
    """``config`` with ``eval.*`` overrides applied and validated against its task; any other
    field is refused, since it would describe another training run."""
    for text in overrides:
        key = text.partition("=")[0].strip()
        if not key.startswith("eval."):
            raise ConfigError(
                f"{source}: {text!r}: evaluation takes eval.* fields only; {key} is part of the "
                "training config (train a new run, or resume this one, to change it)"
            )
    return build_config(apply_overrides(config.to_dict(), list(overrides)), source=source)


def evaluate_config(
    config: RunConfig,
    models: Sequence[InContextLearner] = (),
    show_progress: bool = False,
) -> Evaluation:
    """``models`` and the config's algorithms (``eval.algorithms``) on the same fresh prompts,
    under each of ``eval.shifts``, on ``eval.device``; differences to ``eval.reference``
    (default: the first algorithm)."""
    task = config.evaluation_task().build()
    algorithms = [build_algorithm(spec, task) for spec in config.eval.algorithms]
    shifts, _ = resolve_shifts(config.eval.shifts, task)
    reference = config.eval.reference or (algorithms[0].name if algorithms else None)
    return evaluate(
        [*models, *algorithms],
        task,
        n_points=evaluation_points(config),
        n_prompts=config.eval.n_prompts,
        batch_size=config.eval.batch_size,
        seed=config.eval.seed,
        device=resolve_device(config.eval.device),
        show_progress=show_progress,
        shifts=shifts,
        reference=reference,
    )


@dataclass(frozen=True)
class RunEvaluation(Evaluation):
    """An evaluation of a run, the directory it was kept in (``RUN/eval/NNN``) and the training
    step of the checkpoint it evaluated."""

    directory: Path | None = None
    step: int | None = None


def evaluate_run(
    run_dir: Path,
    overrides: Sequence[str] = (),
    show_progress: bool = False,
    threads: int | None = None,
    step: int | None = None,
) -> RunEvaluation:
    """The newest checkpoint's model (or that of ``step``) and every configured algorithm on
    the same fresh prompts, with ``eval.*`` overrides → a new ``eval/NNN/`` (settings.yaml,
    curves.csv, differences.csv, figures) and plots/loss.png. Everything is checked
    (overrides, prompt length, checkpoint) before anything is written. ``threads`` sets
    torch's CPU threads for the process."""
    set_threads(threads)
    run = RunDir(Path(run_dir))
    config = with_eval_overrides(run.load_config(), overrides, source=f"iclab eval {run.path}")
    check_reference(config, f"iclab eval {run.path}")
    device = resolve_device(config.eval.device)
    model = config.build_model()
    model.check_points(evaluation_points(config))
    checkpoint = newest_checkpoint(run) if step is None else checkpoint_at(run, step)
    load_checkpoint(checkpoint, model, device=device)
    model = model.to(device).eval()
    model.streaming = config.eval.streaming
    cached = cached_learners(model, config.eval.caches)
    evaluation = evaluate_config(config, [model, *cached], show_progress)
    settings = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint_step": checkpoint.step,
        "overrides": list(overrides),
        "eval": config.eval.model_dump(mode="json"),
    }
    run.eval_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run.eval_dir, prefix=".staging-"))
    try:
        atomic_write_text(staging / "settings.yaml", yaml.safe_dump(settings, sort_keys=False))
        write_evaluation(evaluation, config, staging)
        if cached:
            write_cache_evaluation(cached, config, staging)
        kept = keep(staging, run.eval_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    metrics = run.read_metrics()
    if metrics:
        plot_training(metrics, run.plots_dir / "loss.png", f"{config.name}: training")
    return RunEvaluation(evaluation.curves, evaluation.differences, kept, checkpoint.step)


def evaluate_checkpoints(
    run_dir: Path,
    steps: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    show_progress: bool = False,
    threads: int | None = None,
) -> list[RunEvaluation]:
    """``evaluate_run`` of each checkpoint of ``steps`` (None: every valid one the run kept),
    oldest first, each in its own ``eval/NNN/`` (its settings.yaml names the step), then
    ``plots/checkpoints.png``: the model's metric along training, the algorithms' beside it.
    Every step is checked before the first evaluation: the learning dynamics of a run (the
    rise and fall of in-context learning, the moment an induction head forms) in one call."""
    run = RunDir(Path(run_dir))
    steps = checked_steps(run.path, steps)
    evaluations = [
        evaluate_run(run.path, overrides, show_progress, threads, step=step) for step in steps
    ]
    config = with_eval_overrides(run.load_config(), overrides, source=f"iclab eval {run.path}")
    kind = kind_of(config.task.build().kind)
    plot_checkpoints(
        steps,
        [evaluation.curves for evaluation in evaluations],
        run.plots_dir / "checkpoints.png",
        f"{config.name}: along training",
        kind.metric,
        config.task.n_dims,
    )
    return evaluations


def write_cache_evaluation(
    learners: Sequence[CachedModel], config: RunConfig, directory: Path
) -> None:
    """``caches.csv`` (floats each layer held per policy), ``kept.csv`` and ``kept.png`` (which
    positions each eviction policy kept) beside an evaluation with cache policies."""
    write_cache_tables(learners, directory)
    title = f"{config.name}: what each policy kept after {evaluation_points(config)} examples"
    save_kept_figure(learners, title, directory / "kept.png")


def save_kept_figure(learners: Sequence[CachedModel], title: str, path: Path) -> None:
    """The heat maps of which positions each of ``learners`` kept, for those that dropped
    something (none: no figure)."""
    rows = evicted_rows(kept_rows(learners))
    if rows:
        tokens_per_example = learners[0].model.codec.tokens_per_example
        save_figure(kept_figure(rows, title, tokens_per_example), path)


def keep(staging: Path, directory: Path) -> Path:
    """Rename a finished evaluation into the next free ``directory/NNN`` (atomic: a reader sees
    it whole or not at all; two evaluations at once take different numbers)."""
    taken = [int(path.name) for path in directory.iterdir() if path.name.isdigit()]
    number = max(taken, default=0) + 1
    while True:
        target = directory / f"{number:03d}"
        try:
            os.rename(staging, target)  # fails if another evaluation took the number first
        except OSError:
            if not target.exists():
                raise
            number += 1
            continue
        fsync_directory(directory)
        return target


def plot_name(shift: str) -> str:
    """``curves.png`` for the training distribution, ``curves-<shift>.png`` for a shift."""
    if shift == "none":
        return "curves.png"
    return "curves-" + re.sub(r"[^A-Za-z0-9._]+", "-", shift).strip("-") + ".png"


def write_evaluation(evaluation: Evaluation, config: RunConfig, directory: Path) -> None:
    """``curves.csv``, ``differences.csv`` and a curve figure per shift (``curves.png``,
    ``curves-SHIFT.png``) in ``directory``."""
    write_curves_csv(evaluation.curves, directory / "curves.csv")
    write_differences_csv(evaluation.differences, directory / "differences.csv")
    task = config.task
    kind = kind_of(config.task.build().kind)
    by_shift: dict[str, list[CurvePoint]] = {}
    for point in evaluation.curves:
        by_shift.setdefault(point.shift, []).append(point)
    for shift, points in by_shift.items():
        marker = kind.reference_k(task.n_dims)
        title = f"{config.name}: {task.name}" + ("" if marker is None else f", d={task.n_dims}")
        title += f"\n{condition_title(shift)}" if shift != "none" else ""
        trained = task.n_points - 1 if evaluation_points(config) > task.n_points else None
        label = condition_metric(kind, shift).label
        plot_curves(
            points, directory / plot_name(shift), title, label, marker, trained, kind.position_label
        )
