"""Evaluate a trained run, or algorithms alone, and write the tables and plots.

Evaluating never changes a run's training config: what an evaluation used (the run's ``eval``
section with the overrides it was given, the checkpoint step, the date) is written to
``eval/settings.yaml`` beside its tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from iclab.algorithms import build_algorithm
from iclab.config import RunConfig, apply_overrides, build_config
from iclab.devices import resolve_device
from iclab.errors import ConfigError
from iclab.evaluation.curves import (
    CurvePoint,
    Evaluation,
    evaluate,
    write_curves_csv,
    write_differences_csv,
)
from iclab.evaluation.shifts import resolve_shifts
from iclab.io import atomic_write_text
from iclab.kinds import kind_of
from iclab.learner import InContextLearner
from iclab.models import InContextModel
from iclab.report.plots import plot_curves, plot_training
from iclab.run.directory import RunDir
from iclab.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_valid_checkpoint,
    load_checkpoint,
)


def newest_checkpoint(run: RunDir) -> Checkpoint:
    checkpoint = latest_valid_checkpoint(run.checkpoints)
    if checkpoint is None:
        raise CheckpointError(f"{run.path} has no valid checkpoint to evaluate")
    return checkpoint


def load_trained_model(run_dir: Path, device: torch.device | str = "cpu") -> InContextModel:
    """The model of the newest valid checkpoint of a run, in eval mode."""
    run = RunDir(Path(run_dir))
    config = run.load_config()
    checkpoint = newest_checkpoint(run)
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
    task = config.task.build()
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


def evaluate_run(
    run_dir: Path, overrides: Sequence[str] = (), show_progress: bool = False
) -> Evaluation:
    """The newest checkpoint's model and every configured algorithm on the same fresh prompts,
    with ``eval.*`` overrides → eval/ (settings.yaml, curves.csv, differences.csv) and plots/.
    Everything is checked (overrides, prompt length, checkpoint) before anything is written."""
    run = RunDir(Path(run_dir))
    config = with_eval_overrides(run.load_config(), overrides, source=f"iclab eval {run.path}")
    device = resolve_device(config.eval.device)
    model = config.build_model()
    model.check_points(evaluation_points(config))
    checkpoint = newest_checkpoint(run)
    load_checkpoint(checkpoint, model, device=device)
    model = model.to(device).eval()
    model.streaming = config.eval.streaming
    evaluation = evaluate_config(config, [model], show_progress)
    write_evaluation(evaluation, config, run)
    settings = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint_step": checkpoint.step,
        "overrides": list(overrides),
        "eval": config.eval.model_dump(mode="json"),
    }
    atomic_write_text(run.eval_settings_path, yaml.safe_dump(settings, sort_keys=False))
    return evaluation


def plot_name(shift: str) -> str:
    """``curves.png`` for the training distribution, ``curves-<shift>.png`` for a shift."""
    if shift == "none":
        return "curves.png"
    return "curves-" + re.sub(r"[^A-Za-z0-9._]+", "-", shift).strip("-") + ".png"


def write_evaluation(evaluation: Evaluation, config: RunConfig, run: RunDir) -> None:
    """``eval/curves.csv``, ``eval/differences.csv`` and a curve plot per shift (and
    ``plots/loss.png`` for a trained run); plots of shifts no longer evaluated are removed."""
    write_curves_csv(evaluation.curves, run.eval_dir / "curves.csv")
    write_differences_csv(evaluation.differences, run.eval_dir / "differences.csv")
    task = config.task
    kind = kind_of(config.task.build().kind)
    by_shift: dict[str, list[CurvePoint]] = {}
    for point in evaluation.curves:
        by_shift.setdefault(point.shift, []).append(point)
    for old in run.plots_dir.glob("curves-*.png"):
        if old.name not in {plot_name(shift) for shift in by_shift}:
            old.unlink()
    for shift, points in by_shift.items():
        marker = kind.reference_k(task.n_dims)
        title = f"{config.name}: {task.name}" + ("" if marker is None else f", d={task.n_dims}")
        if shift != "none":
            title += f"\nshift: {shift}"
        trained = task.n_points - 1 if evaluation_points(config) > task.n_points else None
        plot_curves(
            points, run.plots_dir / plot_name(shift), title, kind.metric.label, marker, trained
        )
    metrics = run.read_metrics()
    if metrics:
        plot_training(metrics, run.plots_dir / "loss.png", f"{config.name}: training")
