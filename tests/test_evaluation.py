"""Evaluation: all learners on the same prompts; means and intervals computed correctly."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from iclab.algorithms import build_algorithm
from iclab.evaluation.curves import (
    Evaluation,
    evaluate,
    read_curves_csv,
    summarise,
    write_curves_csv,
)
from iclab.tasks.regression import LinearRegression


class Recorder:
    """A learner that remembers the prompts it saw and predicts zero."""

    def __init__(self, name):
        self.name = name
        self.seen = []

    def predict(self, episode):
        self.seen.append(episode.inputs.clone())
        return torch.zeros_like(episode.targets)


def test_every_learner_sees_the_same_prompts():
    first, second = Recorder("a"), Recorder("b")
    evaluate([first, second], LinearRegression(3), 6, n_prompts=50, batch_size=16, seed=0)
    assert len(first.seen) == 4
    assert all(torch.equal(x, y) for x, y in zip(first.seen, second.seen, strict=True))
    assert sum(x.shape[0] for x in first.seen) == 50


def test_summary_is_mean_with_normal_95_percent_interval():
    errors = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    points = summarise(errors, "x")
    column = errors[:, 1]
    half = 1.959963984540054 * column.std().item() / math.sqrt(4)
    assert points[1].mean == column.mean().item()
    assert math.isclose(points[1].ci_high - points[1].mean, half)
    assert math.isclose(points[1].mean - points[1].ci_low, half)
    assert [p.k for p in points] == [0, 1, 2] and points[0].n_prompts == 4


def test_zero_predictor_error_is_one_at_every_k_within_its_interval():
    task = LinearRegression(4)
    points = evaluate(
        [build_algorithm("zero", task)], task, 10, n_prompts=2000, batch_size=500, seed=3
    ).curves
    # E[(w·x)^2]/d = 1; allow 4 half-widths (≈ 4 standard errors at 95%: fails with p ≈ 1e-4 each)
    for point in points:
        assert abs(point.mean - 1.0) < 2 * (point.ci_high - point.ci_low)


def test_least_squares_error_vanishes_after_d_examples():
    task = LinearRegression(4)
    points = evaluate(
        [build_algorithm("least_squares", task)], task, 10, n_prompts=256, batch_size=128, seed=0
    ).curves
    assert all(p.mean < 1e-8 for p in points if p.k >= 4)
    assert all(p.mean > 0.05 for p in points if p.k < 4)


def test_curves_csv_has_the_tidy_columns_and_round_trips(tmp_path):
    points = summarise(torch.rand(10, 3, dtype=torch.float64), "model")
    path = tmp_path / "curves.csv"
    write_curves_csv(points, path)
    with path.open() as handle:
        assert next(csv.reader(handle)) == [
            "learner",
            "metric",
            "shift",
            "k",
            "mean",
            "ci_low",
            "ci_high",
            "n_prompts",
        ]
    assert read_curves_csv(path) == points


@pytest.mark.parametrize(
    ("task", "label"),
    [
        ("linear_classification", "accuracy"),
        ("mqar", "next-token accuracy"),
        ("linear_regression", "squared error / E[y²]"),
    ],
)
def test_curve_plots_are_labelled_with_the_metric_of_the_task_kind(
    task, label, tmp_path, monkeypatch
):
    from iclab.config import build_config
    from iclab.run import evaluation as run_evaluation

    labels = []
    monkeypatch.setattr(run_evaluation, "plot_curves", lambda *args: labels.append(args[3]))
    config = build_config({"task": {"name": task}})
    evaluation = Evaluation(summarise(torch.rand(4, 3).double(), "x"), [])
    run_evaluation.write_evaluation(evaluation, config, tmp_path)
    assert labels == [label]


def test_streaming_evaluation_gives_the_same_curve_as_the_full_forward_pass(tmp_path):
    from conftest import tiny_config
    from iclab.run import evaluate_run, train_run

    config = tiny_config(
        model={"layers": "gru, softmax", "d_model": 16, "n_heads": 2},
        eval={"n_prompts": 64, "algorithms": ["least_squares"]},
    )
    train_run(config, tmp_path / "run", show_progress=False)
    parallel = evaluate_run(tmp_path / "run").curves
    streamed = evaluate_run(tmp_path / "run", ["eval.streaming=true"]).curves
    assert len(parallel) == len(streamed)
    for a, b in zip(parallel, streamed, strict=True):
        assert (a.learner, a.k) == (b.learner, b.k)
        assert a.mean == pytest.approx(b.mean, rel=1e-4, abs=1e-6)


def trained_tiny_run(tmp_path, **sections):
    from conftest import tiny_config
    from iclab.run import train_run

    config = tiny_config(train={"steps": 4}, **sections)
    train_run(config, tmp_path / "run", show_progress=False)
    return tmp_path / "run"


def test_a_model_with_learned_positions_refuses_longer_prompts_clearly(tmp_path):
    from iclab.config import ConfigError
    from iclab.run import evaluate_run

    run = trained_tiny_run(tmp_path)
    with pytest.raises(ConfigError, match="learned position table covers 8 examples"):
        evaluate_run(run, ["eval.n_points=16"])
    assert not (run / "eval").exists()  # refused before anything was written


def test_a_rotary_model_is_evaluated_beyond_its_training_length(tmp_path):
    from iclab.run import evaluate_run

    run = trained_tiny_run(tmp_path, model={"mixer": "softmax(positions=rotary)"})
    curves = evaluate_run(run, ["eval.n_points=16"]).curves
    assert max(p.k for p in curves if p.learner == "model") == 15
    assert all(math.isfinite(p.mean) for p in curves)


def test_shifted_evaluation_writes_rows_differences_and_a_figure_per_shift_and_is_kept(tmp_path):
    from conftest import latest_evaluation
    from iclab.evaluation.curves import read_differences_csv
    from iclab.run import RunDir, evaluate_run

    run = trained_tiny_run(tmp_path)
    evaluate_run(run, ['eval.shifts=["scale_inputs(factor=2)", orthogonal_query]'])
    first = latest_evaluation(run)
    rows = read_curves_csv(first / "curves.csv")
    assert {p.shift for p in rows} == {"none", "scale_inputs(factor=2)", "orthogonal_query"}
    assert max(p.k for p in rows if p.shift == "orthogonal_query") == 2  # k < d = 3
    differences = read_differences_csv(first / "differences.csv")
    assert {(d.learner, d.reference) for d in differences} == {
        ("model", "least_squares"),
        ("averaging", "least_squares"),
    }
    figures = {path.name for path in first.glob("curves*.png")}
    assert figures == {
        "curves.png",
        "curves-scale_inputs-factor-2.png",
        "curves-orthogonal_query.png",
    }
    second = evaluate_run(run, ["eval.shifts=[orthogonal_query]"]).directory
    assert second == latest_evaluation(run) != first
    assert {path.name for path in second.glob("curves*.png")} == {
        "curves.png",
        "curves-orthogonal_query.png",
    }
    assert {path.name for path in first.glob("curves*.png")} == figures  # the first is kept
    assert [path.name for path in RunDir(run).evaluations()] == ["001", "002"]


def test_late_paired_difference_treats_each_prompts_late_mean_as_one_sample():
    """Two prompts: learner − reference is +0.5 at every late position of one and −0.5 at
    every late position of the other (NaN-free), with the early position ignored; the mean is
    0 and the interval's half-width is 1.96 × sd(0.5, −0.5) / √2, whatever the number of
    positions (they are not independent samples)."""
    from iclab.evaluation.curves import Z_95, late_paired_difference

    reference = torch.zeros(2, 5, dtype=torch.float64)
    learner = torch.tensor([[9.0, 0.5, 0.5, 0.5, 0.5], [-9.0, -0.5, -0.5, -0.5, -0.5]]).double()
    learner[0, 2] = torch.nan  # an unscored position leaves that prompt's mean unchanged
    reference[0, 2] = torch.nan
    evaluation = Evaluation([], [], scores={("none", "a"): learner, ("none", "b"): reference})
    mean, low, high = late_paired_difference(evaluation, "a", "b", first_k=1)
    half = Z_95 * torch.tensor([0.5, -0.5]).std().item() / 2**0.5
    assert mean == pytest.approx(0.0)
    assert (low, high) == pytest.approx((-half, half))
    with pytest.raises(ValueError, match="fewer than two prompts"):
        late_paired_difference(evaluation, "a", "b", first_k=5)
