"""Evaluate a trained run, or the algorithms alone, and write the tables and plots."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from iclab import catalog
from iclab.algorithms import build_algorithm
from iclab.config import ConfigError, RunConfig
from iclab.evaluation.curves import (
    CurvePoint,
    Evaluation,
    evaluate,
    write_curves_csv,
    write_differences_csv,
)
from iclab.evaluation.shifts import resolve_shifts
from iclab.learner import InContextLearner
from iclab.metrics import METRICS
from iclab.models import InContextModel, build_model
from iclab.report.plots import plot_curves, plot_training
from iclab.run import RunDir
from iclab.training.checkpoint import CheckpointError, latest_valid_checkpoint, load_checkpoint


def load_trained_model(run_dir: Path, device: torch.device | str = "cpu") -> InContextModel:
    """The model of the newest valid checkpoint of a run, in eval mode."""
    run = RunDir(Path(run_dir))
    config = run.load_config()
    checkpoint = latest_valid_checkpoint(run.checkpoints)
    if checkpoint is None:
        raise CheckpointError(f"{run.path} has no valid checkpoint to evaluate")
    model = build_model(config.model, config.task, name="model")
    load_checkpoint(checkpoint, model, device=device)
    return model.to(device).eval()


def evaluation_points(config: RunConfig) -> int:
    """Examples per evaluation prompt: ``eval.n_points``, else the trained ``task.n_points``."""
    return config.eval.n_points or config.task.n_points


def check_length(model: InContextModel, config: RunConfig, run: Path) -> None:
    """A clear error when the prompts are longer than a learned position table covers."""
    backbone = model.backbone
    n_points = evaluation_points(config)
    tokens = n_points * model.codec.tokens_per_example
    if backbone.position is not None and tokens > backbone.n_positions:
        trained = backbone.n_positions // model.codec.tokens_per_example
        raise ConfigError(
            f"{run}: eval.n_points={n_points} is longer than the model can read: its learned "
            f"position table covers {trained} points (the prompts it was trained on). Mixers "
            "that continue past their training length: softmax(positions=rotary|alibi|none) "
            "and the recurrent ones (iclab models)"
        )


def evaluate_learners(
    config: RunConfig,
    models: Sequence[InContextLearner] = (),
    n_prompts: int | None = None,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> Evaluation:
    """``models`` and the config's algorithms (``eval.algorithms``) on the same fresh prompts,
    under each of ``eval.shifts``; differences to ``eval.reference`` (default: the first
    algorithm)."""
    task = config.task.build()
    algorithms = [build_algorithm(spec, task) for spec in config.eval.algorithms]
    shifts, _ = resolve_shifts(config.eval.shifts, task)
    reference = config.eval.reference or (algorithms[0].name if algorithms else None)
    return evaluate(
        [*models, *algorithms],
        task,
        n_points=evaluation_points(config),
        n_prompts=n_prompts or config.eval.n_prompts,
        batch_size=config.eval.batch_size,
        seed=config.eval.seed,
        device=device,
        show_progress=show_progress,
        shifts=shifts,
        reference=reference,
    )


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
    kind = task.build().kind
    by_shift: dict[str, list[CurvePoint]] = {}
    for point in evaluation.curves:
        by_shift.setdefault(point.shift, []).append(point)
    for old in run.plots_dir.glob("curves-*.png"):
        if old.name not in {plot_name(shift) for shift in by_shift}:
            old.unlink()
    for shift, points in by_shift.items():
        title = f"{config.name}: {task.name}" + (
            f", d={task.n_dims}" if kind == "regression" else ""
        )
        if shift != "none":
            title += f"\nshift: {shift}"
        marker = task.n_dims if kind == "regression" else None
        trained = task.n_points - 1 if evaluation_points(config) > task.n_points else None
        plot_curves(
            points, run.plots_dir / plot_name(shift), title, METRICS[kind].label, marker, trained
        )
    metrics = run.read_metrics()
    if metrics:
        plot_training(metrics, run.plots_dir / "loss.png", f"{config.name}: training")


def evaluate_run(
    run_dir: Path,
    n_prompts: int | None = None,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> Evaluation:
    """Model and every configured algorithm on the same fresh prompts → eval/ + plots/."""
    run = RunDir(Path(run_dir))
    config = run.load_config()
    model = load_trained_model(run.path, device)
    check_length(model, config, run.path)
    model.streaming = config.eval.streaming
    evaluation = evaluate_learners(config, [model], n_prompts, device, show_progress)
    write_evaluation(evaluation, config, run)
    catalog.record(run.path)
    return evaluation
