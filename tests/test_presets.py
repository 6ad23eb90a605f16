"""Every preset in configs/ trains and evaluates through the real command line, as a user would
run it (``iclab train NAME``, ``iclab eval RUN``), at smoke size: 2 steps, a few prompts."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from conftest import latest_evaluation
from iclab.cli import app
from iclab.config import PRESETS_DIR, load_config
from iclab.evaluation.curves import read_curves_csv
from iclab.run import RunDir

PRESETS = sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))
runner = CliRunner()


def test_presets_are_found():
    assert "quickstart" in PRESETS and len(PRESETS) >= 20


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_two_steps_and_evaluates_through_the_cli(preset, tmp_path):
    run = tmp_path / preset
    trained = runner.invoke(
        app, ["train", preset, "--set", "train.steps=2", "--out", str(run), "--no-progress"]
    )
    assert trained.exit_code == 0, trained.output
    assert RunDir(run).read_info()["status"] == "completed"
    assert (run / "checkpoints" / "step-0000002" / "model.safetensors").is_file()
    evaluated = runner.invoke(app, ["eval", str(run), "--n-prompts", "8", "--no-progress"])
    assert evaluated.exit_code == 0, evaluated.output
    config = load_config(preset)
    points = read_curves_csv(latest_evaluation(run) / "curves.csv")
    learners = {point.learner for point in points}
    cached = {f"model[{spec}]" for spec in config.eval.caches}
    assert learners == {"model", *cached, *(str(spec) for spec in config.eval.algorithms)}
    assert all(math.isfinite(point.mean) for point in points if point.learner == "model")
    assert (latest_evaluation(run) / "curves.png").is_file()
