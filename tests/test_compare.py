"""`iclab compare`: several runs' curves overlaid, one figure per shift."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import latest_evaluation, tiny_config
from iclab.cli import app
from iclab.errors import UserError
from iclab.evaluation.curves import read_curves_csv
from iclab.report.compare import comparison_curves
from iclab.run import evaluate_run, train_run
from iclab.run.compare import read_evaluated, write_comparison


def compared(*paths, algorithms=None):
    return comparison_curves([read_evaluated(path, paths) for path in paths], algorithms)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two evaluated tiny runs of one task (the second also under a shift), one unevaluated."""
    root = tmp_path_factory.mktemp("runs")
    for name, sections in (
        ("small", {}),
        ("wide", {"model": {"d_model": 48}, "eval": {"shifts": ["scale_inputs(factor=2)"]}}),
        ("fresh", {}),
    ):
        config = tiny_config(train={"steps": 3}, **sections)
        train_run(config, root / name, show_progress=False)
        if name != "fresh":
            evaluate_run(root / name, ["eval.n_prompts=32"])
    return root


def test_models_are_named_after_their_runs_and_algorithms_appear_once(runs):
    points = compared(runs / "small", runs / "wide")
    learners = list(dict.fromkeys(p.learner for p in points))
    assert learners == ["small", "wide", "least_squares", "averaging"]
    small = read_curves_csv(latest_evaluation(runs / "small") / "curves.csv")
    model = {p.k: p.mean for p in small if p.learner == "model"}
    assert {p.k: p.mean for p in points if p.learner == "small"} == model


def test_one_figure_per_shift_any_run_was_evaluated_under(runs, tmp_path):
    write_comparison([runs / "small", runs / "wide"], tmp_path / "cmp", ["least_squares"])
    figures = {path.name for path in (tmp_path / "cmp").glob("*.png")}
    assert figures == {"curves.png", "curves-scale_inputs-factor-2.png"}
    rows = read_curves_csv(tmp_path / "cmp" / "curves.csv")
    assert {p.learner for p in rows} == {"small", "wide", "least_squares"}
    assert {p.learner for p in rows if p.shift != "none"} == {"wide", "least_squares"}


def test_an_unevaluated_run_or_unknown_algorithm_is_a_clear_error(runs):
    with pytest.raises(UserError, match="has not been evaluated: run `iclab eval"):
        compared(runs / "small", runs / "fresh")
    with pytest.raises(UserError, match="no run evaluated the algorithm"):
        compared(runs / "small", algorithms=["ridge"])


def test_runs_of_different_tasks_are_compared_with_a_warning(runs, tmp_path):
    config = tiny_config(train={"steps": 2}, task={"n_dims": 4})
    train_run(config, tmp_path / "d4", show_progress=False)
    evaluate_run(tmp_path / "d4", ["eval.n_prompts=16"])
    with pytest.warns(UserWarning, match="different tasks"):
        compared(runs / "small", tmp_path / "d4")


def test_cli_compare_prints_the_table_and_where_the_figures_are(runs, tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        app, ["compare", str(runs / "small"), str(runs / "wide"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "small" in result.output and "wide" in result.output
    assert "curves-scale_inputs-factor-2.png" in result.output
    assert (out / "curves.csv").exists()
