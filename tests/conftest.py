"""Shared fixtures: tiny configs that train in a second on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iclab.config import ModelConfig, RunConfig, TaskConfig, build_config
from iclab.models import InContextModel, build_model


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread: the same reduction order run to run (the resume test compares bits),
    and no OpenMP spin-waiting on a busy 2-core machine, where small batched LAPACK calls were
    measured to slow down a thousandfold with two threads."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def tiny_config(**sections) -> RunConfig:
    data = {
        "name": "tiny",
        "task": {"name": "linear_regression", "n_dims": 3, "n_points": 8},
        "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
        "train": {
            "steps": 30,
            "batch_size": 16,
            "lr": 3e-3,
            "log_every": 1,
            "checkpoint_every": 10,
            "keep_checkpoints": 2,
            "device": "cpu",
        },
        "eval": {"n_prompts": 64, "batch_size": 32, "algorithms": ["least_squares", "averaging"]},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return build_config(data)


@pytest.fixture
def config() -> RunConfig:
    return tiny_config()


def train_preset_and_evaluate(preset: str, run_dir, overrides=(), n_prompts: int = 512):
    """Train a preset (configs/PRESET.yaml) in ``run_dir`` and evaluate it with its yardsticks:
    the shared body of the slow per-family tests. Returns ``{learner: {k: CurvePoint}}``."""
    from iclab.config import load_config
    from iclab.run import evaluate_run, train_run

    config = load_config(preset, list(overrides))
    train_run(config, run_dir, show_progress=False)
    points = evaluate_run(run_dir, [f"eval.n_prompts={n_prompts}"]).curves
    curves: dict = {}
    for point in points:
        curves.setdefault(point.learner, {})[point.k] = point
    return curves


def model_for(model: ModelConfig, task: TaskConfig, name: str = "model") -> InContextModel:
    """``build_model`` for a model config and a task config, as the trainer calls it."""
    return build_model(model, task.io(), task.n_points, name=name)


def latest_evaluation(run_dir) -> Path:
    """The directory of a run's newest evaluation (``RUN/eval/NNN``)."""
    from iclab.run import RunDir

    latest = RunDir(run_dir).latest_evaluation()
    assert latest is not None, f"{run_dir} has no evaluation"
    return latest
