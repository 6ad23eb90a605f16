"""Evaluate a trained run, or the algorithms alone, and write the table and plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from iclab.algorithms import build_algorithm
from iclab.config import RunConfig
from iclab.evaluation.curves import CurvePoint, evaluate, write_curves_csv
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


def evaluate_learners(
    config: RunConfig,
    models: Sequence[InContextLearner] = (),
    n_prompts: int | None = None,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> list[CurvePoint]:
    """``models`` and the config's algorithms (``eval.algorithms``) on the same fresh prompts."""
    task = config.task.build()
    learners = [*models, *(build_algorithm(spec, task) for spec in config.eval.algorithms)]
    return evaluate(
        learners,
        task,
        n_points=config.task.n_points,
        n_prompts=n_prompts or config.eval.n_prompts,
        batch_size=config.eval.batch_size,
        seed=config.eval.seed,
        device=device,
        show_progress=show_progress,
    )


def write_evaluation(points: Sequence[CurvePoint], config: RunConfig, run: RunDir) -> None:
    """``eval/curves.csv`` and ``plots/curves.png`` (+ ``plots/loss.png`` for a trained run)."""
    write_curves_csv(points, run.eval_dir / "curves.csv")
    task = config.task
    kind = task.build().kind
    title = f"{config.name}: {task.name}" + (f", d={task.n_dims}" if kind == "regression" else "")
    marker = task.n_dims if kind == "regression" else None
    plot_curves(points, run.plots_dir / "curves.png", title, METRICS[kind].label, marker)
    metrics = run.read_metrics()
    if metrics:
        plot_training(metrics, run.plots_dir / "loss.png", f"{config.name}: training")


def evaluate_run(
    run_dir: Path,
    n_prompts: int | None = None,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> list[CurvePoint]:
    """Model and every configured algorithm on the same fresh prompts → eval/curves.csv + plots."""
    run = RunDir(Path(run_dir))
    config = run.load_config()
    model = load_trained_model(run.path, device)
    model.streaming = config.eval.streaming
    points = evaluate_learners(config, [model], n_prompts, device, show_progress)
    write_evaluation(points, config, run)
    return points
