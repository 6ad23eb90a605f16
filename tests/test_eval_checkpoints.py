"""``iclab eval|probe RUN --checkpoints all|STEPS``: every kept checkpoint evaluated (or probed)
on the same prompts, each in its own directory naming its step, and the findings along
training."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from iclab.cli import app
from iclab.evaluation import read_curves_csv
from iclab.io import read_yaml
from iclab.run import RunDir, train_run

STEPS = (10, 20, 30)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "run"
    config = tiny_config(train={"steps": 30, "checkpoint_every": 10, "keep_checkpoints": 5})
    train_run(config, path, show_progress=False)
    return path


def evaluate(run, *arguments: str):
    return CliRunner().invoke(
        app, ["eval", str(run), "--n-prompts", "32", "--no-progress", *arguments]
    )


def new_evaluations(run, before: set[str]) -> list:
    directories = sorted(RunDir(run).eval_dir.iterdir())
    return [d for d in directories if d.name.isdigit() and d.name not in before]


def model_curve(directory) -> list[float]:
    points = read_curves_csv(directory / "curves.csv")
    return [p.mean for p in points if p.learner == "model" and p.shift == "none"]


def existing(run) -> set[str]:
    eval_dir = RunDir(run).eval_dir
    return {d.name for d in eval_dir.iterdir()} if eval_dir.exists() else set()


def test_all_evaluates_every_kept_checkpoint_on_the_same_prompts(run):
    before = existing(run)
    result = evaluate(run, "--checkpoints", "all")
    assert result.exit_code == 0, result.output
    directories = new_evaluations(run, before)
    steps = [read_yaml(d / "settings.yaml")["checkpoint_step"] for d in directories]
    assert steps == list(STEPS)
    curves = [model_curve(d) for d in directories]
    assert curves[0] != curves[-1], "different checkpoints, different models"
    algorithms = [
        [p for p in read_curves_csv(d / "curves.csv") if p.learner != "model"] for d in directories
    ]
    assert algorithms[0] == algorithms[-1], "the same prompts for every checkpoint"
    assert (RunDir(run).plots_dir / "checkpoints.png").stat().st_size > 0
    for step in STEPS:
        assert f"│ {step:>4} │" in result.output
    assert "kept only" not in result.output  # it kept all it wrote

    latest = evaluate(run)  # the default: the newest checkpoint, as before
    assert latest.exit_code == 0, latest.output
    (plain,) = new_evaluations(run, before | {d.name for d in directories})
    assert model_curve(plain) == curves[-1]
    report = CliRunner().invoke(app, ["report", str(run)])
    assert report.exit_code == 0, report.output
    assert "<h3>Along training</h3>" in (RunDir(run).path / "report.html").read_text()


def test_listed_steps_are_evaluated_and_an_unknown_one_names_the_kept_steps(run):
    before = existing(run)
    result = evaluate(run, "--checkpoints", "30,10")
    assert result.exit_code == 0, result.output
    directories = new_evaluations(run, before)
    assert [read_yaml(d / "settings.yaml")["checkpoint_step"] for d in directories] == [10, 30]

    before = existing(run)
    missing = evaluate(run, "--checkpoints", "10,15")
    assert missing.exit_code == 2
    assert "no valid checkpoint of step 15; steps kept: 10, 20, 30" in missing.output
    assert existing(run) == before, "nothing is written before every step is checked"
    typo = evaluate(run, "--checkpoints", "al")
    assert typo.exit_code == 2 and "give latest, all, or training steps" in typo.output
    without_run = CliRunner().invoke(
        app, ["eval", "--task", "linear_regression", "--checkpoints", "all"]
    )
    assert without_run.exit_code == 2 and "--task has none" in without_run.output


def test_a_probe_along_training_writes_each_step_and_a_summary_table(run):
    result = CliRunner().invoke(
        app, ["probe", str(run), "--probe", "attention_sink", "--checkpoints", "all"]
    )
    assert result.exit_code == 0, result.output
    steps_dir = RunDir(run).probes_dir / "attention_sink" / "steps"
    assert sorted(p.name for p in steps_dir.iterdir()) == [
        "step-000010",
        "step-000020",
        "step-000030",
        "summary.csv",
    ]
    rows = list(csv.DictReader((steps_dir / "summary.csv").open()))
    assert [int(row["step"]) for row in rows] == list(STEPS)
    latest = CliRunner().invoke(app, ["probe", str(run), "--probe", "attention_sink"])
    assert latest.exit_code == 0, latest.output
    newest = json.loads((RunDir(run).probes_dir / "attention_sink" / "summary.json").read_text())
    assert float(rows[-1]["max_sink_share"]) == newest["max_sink_share"], "the same prompts"

    missing = CliRunner().invoke(
        app, ["probe", str(run), "--probe", "attention_sink(first=2)", "--checkpoints", "10,15"]
    )
    assert missing.exit_code == 2 and "no valid checkpoint of step 15; steps kept: 10, 20, 30" in (
        missing.output.replace("\n", "")
    )
    assert not (RunDir(run).probes_dir / "attention_sink-first-2").exists()


def test_all_says_when_the_run_kept_only_its_last_checkpoints(tmp_path):
    config = tiny_config(train={"steps": 30, "checkpoint_every": 10, "keep_checkpoints": 2})
    train_run(config, tmp_path / "run", show_progress=False)
    result = evaluate(tmp_path / "run", "--checkpoints", "all")
    assert result.exit_code == 0, result.output
    assert "kept only its last 2 of 3 checkpoints" in result.output
    assert "--set train.keep_checkpoints=3" in result.output
