"""The gd_alignment probe: GD itself scores alignment 1, a random model does not."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch import Tensor, nn

from conftest import model_for, tiny_config
from iclab.algorithms.linear import prefix_gradient_descent
from iclab.config import ModelConfig, TaskConfig
from iclab.episode import Episode
from iclab.probes import build_probe, probe_run
from iclab.probes.gd_alignment import ETA_GRID
from iclab.probes.run_probe import probe_dir
from iclab.run import RunDir, train_run

N_DIMS, N_POINTS = 4, 9


class GradientDescentModel(nn.Module):
    """A one-layer "model" that IS ``steps``-step GD with step size ``eta`` (differentiably)."""

    def __init__(self, steps: int, eta: float) -> None:
        super().__init__()
        self.steps, self.eta = steps, eta

    def forward(self, episode: Episode) -> Tensor:
        return prefix_gradient_descent(episode.inputs, episode.targets, self.steps, self.eta)

    def hidden_states(self, episode: Episode) -> list[Tensor]:
        prediction = self(episode)[..., None]  # (B, n, 1): the only layer's stream
        return [torch.zeros_like(prediction), prediction]

    def read_out(self, hidden: Tensor) -> Tensor:
        return hidden.squeeze(-1)


def linear_task(n_dims: int = N_DIMS, n_points: int = N_POINTS, name: str = "linear_regression"):
    return TaskConfig(name=name, n_dims=n_dims, n_points=n_points)


def probe_model(model, spec: str, task_config: TaskConfig | None = None):
    task_config = task_config or linear_task()
    task = task_config.build()
    probe = build_probe(spec)
    probe.check_applies(model, task)
    return probe.run(model, task, task_config.n_points, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("eta", [0.07, 0.7, 1.9])
def test_one_step_gd_model_aligns_perfectly_and_its_step_size_is_recovered(eta):
    result = probe_model(GradientDescentModel(1, eta), "gd_alignment(n_prompts=128)")
    rows = result.tables["alignment"]
    assert [row["k"] for row in rows] == list(range(1, N_POINTS))
    for row in rows:
        assert row["layer"] == 1
        assert row["sensitivity_cosine"] > 0.999
        assert row["prediction_difference"] < 1e-8
        assert abs(math.log(row["eta"] / eta)) < 1e-3  # one step: the closed-form fit is exact
    assert result.summary["k"] == N_DIMS
    assert result.summary["best_layer"] == 1


def test_two_step_gd_model_aligns_with_two_step_gd_and_its_grid_step_size_is_found():
    """Several steps fit η on ETA_GRID; a model at a grid value must be matched exactly (off the
    grid, a step size a grid step away flips the sign of two-step GD where η‖x‖² ≈ 2)."""
    eta = ETA_GRID[17].item()
    result = probe_model(GradientDescentModel(2, eta), "gd_alignment(steps=2, n_prompts=128)")
    for row in result.tables["alignment"]:
        assert row["sensitivity_cosine"] > 0.999
        assert row["prediction_difference"] < 1e-8
        assert row["eta"] == pytest.approx(eta)


def test_one_step_comparison_does_not_align_a_two_step_gd_model():
    """The comparison is not vacuous: a model running two steps at η = 0.9 (which overshoots
    where η‖x‖² > 2, flipping the prediction's direction) is not one-step GD at any η."""
    result = probe_model(GradientDescentModel(2, 0.9), "gd_alignment(n_prompts=128)")
    cosines = [row["sensitivity_cosine"] for row in result.tables["alignment"]]
    assert max(cosines) < 0.9


def test_untrained_softmax_model_is_not_aligned_with_gd():
    """A random network's sensitivity to the query is unrelated to the context's GD weights:
    the mean cosine over 256 prompts is 0 within ~0.03 (one standard error in d = 4), so 0.2
    is six standard errors; GD itself scores > 0.999 (above)."""
    torch.manual_seed(0)
    task_config = linear_task()
    model = model_for(ModelConfig(n_layers=2, d_model=32, n_heads=2), task_config).eval()
    result = probe_model(model, "gd_alignment(n_prompts=256)", task_config)
    rows = result.tables["alignment"]
    assert {row["layer"] for row in rows} == {1, 2}
    assert all(abs(row["sensitivity_cosine"]) < 0.2 for row in rows)
    assert abs(result.summary["sensitivity_cosine"]) < 0.2


@pytest.mark.parametrize(
    ("task_config", "reason"),
    [
        (linear_task(name="linear_classification"), "needs a regression task"),
        (
            TaskConfig(name="representation_regression", n_dims=4, feature_dim=4),
            "targets linear in x",
        ),
    ],
)
def test_probe_refuses_tasks_whose_targets_are_not_linear_in_x(task_config, reason):
    probe = build_probe("gd_alignment")
    with pytest.raises(ValueError, match=reason):
        probe.check_applies(GradientDescentModel(1, 1.0), task_config.build())


def test_summary_k_beyond_the_prompt_is_refused():
    with pytest.raises(ValueError, match="k=9 must be at most n_points − 1 = 8"):
        probe_model(GradientDescentModel(1, 1.0), "gd_alignment(k=9, n_prompts=8)")


def test_probe_run_writes_summary_table_and_figure_for_a_trained_run(tmp_path):
    config = tiny_config()
    train_run(config, tmp_path / "run", show_progress=False)
    spec = "gd_alignment(n_prompts=64)"
    result = probe_run(tmp_path / "run", spec)

    directory = probe_dir(RunDir(tmp_path / "run"), spec)
    summary = json.loads((directory / "summary.json").read_text())
    with open(directory / "alignment.csv") as handle:
        rows = list(csv.DictReader(handle))
    n_layers, n_points = config.model.n_layers, config.task.n_points
    assert len(rows) == n_layers * (n_points - 1)
    assert summary["probe"] == spec and summary["k"] == config.task.n_dims
    last = next(r for r in rows if int(r["layer"]) == n_layers and int(r["k"]) == summary["k"])
    assert float(last["sensitivity_cosine"]) == pytest.approx(summary["sensitivity_cosine"])
    assert all(-1 <= float(r["sensitivity_cosine"]) <= 1 for r in rows)
    assert all(float(r["prediction_difference"]) >= 0 for r in rows)
    assert result.summary == {key: value for key, value in summary.items() if key != "probe"}
    assert (directory / "alignment.png").read_bytes().startswith(b"\x89PNG")
