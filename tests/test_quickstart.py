"""The quickstart's promise (slow: trains the real quickstart model for a few minutes)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import latest_evaluation
from iclab.cli import app
from iclab.config import load_config
from iclab.evaluation import read_curves_csv


@pytest.mark.slow
def test_quickstart_model_beats_averaging_and_knn_and_nears_least_squares(tmp_path):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"report: {tmp_path / 'report.html'}" in result.output.replace("\n", "")
    d = load_config("quickstart").task.n_dims
    points = read_curves_csv(latest_evaluation(tmp_path) / "curves.csv")
    error = {(p.learner, p.k): p.mean for p in points}
    assert error[("model", 2 * d)] <= 0.15
    for k in sorted({p.k for p in points if p.k >= d}):
        assert error[("model", k)] < error[("averaging", k)], k
        assert error[("model", k)] < error[("knn", k)], k
