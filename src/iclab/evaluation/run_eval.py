"""Evaluate a trained run against the reference algorithms and write its table and plots."""

from __future__ import annotations

from pathlib import Path

import torch

from iclab.algorithms import build_algorithm
from iclab.evaluation.curves import CurvePoint, evaluate, write_curves_csv
from iclab.models import InContextModel, build_model
from iclab.report.plots import plot_curves, plot_training
from iclab.run import RunDir
from iclab.tasks import make_task
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


def evaluate_run(
    run_dir: Path,
    n_prompts: int | None = None,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> list[CurvePoint]:
    """Model and every configured algorithm on the same fresh prompts → eval/curves.csv + plots."""
    run = RunDir(Path(run_dir))
    config = run.load_config()
    task = make_task(config.task.name, config.task.n_dims, config.task.options)
    learners = [load_trained_model(run.path, device)]
    learners += [build_algorithm(name, task) for name in config.eval.algorithms]
    points = evaluate(
        learners,
        task,
        n_points=config.task.n_points,
        n_prompts=n_prompts or config.eval.n_prompts,
        batch_size=config.eval.batch_size,
        seed=config.eval.seed,
        device=device,
        show_progress=show_progress,
    )
    write_curves_csv(points, run.eval_dir / "curves.csv")
    title = f"{config.name}: {config.task.name}, d={config.task.n_dims}"
    plot_curves(points, run.plots_dir / "curves.png", title, config.task.n_dims)
    metrics = run.read_metrics()
    if metrics:
        plot_training(metrics, run.plots_dir / "loss.png", f"{config.name}: training")
    return points
