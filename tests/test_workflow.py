"""The researcher's workflow (issue 17): feedback on long work in a log as in a terminal,
schedules that do not surprise, kept evaluations in the report, helpful errors."""

from __future__ import annotations

import io
import math
import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from conftest import latest_evaluation, tiny_config
from iclab import progress as progress_module
from iclab.cli import app
from iclab.config import TrainConfig, load_config
from iclab.errors import ConfigError, close_names, did_you_mean
from iclab.progress import Tracker, progress
from iclab.report.plots import curriculum_stages
from iclab.run import RunDir, evaluate_run, train_run, write_report
from iclab.training.schedule import curriculum_shortfall, learning_rate, schedule_jump

runner = CliRunner()


def write_config(tmp_path, **sections):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config(**sections).to_yaml())
    return path


@pytest.fixture
def every_update_printed(monkeypatch):
    """Plain progress lines at every update, as a log file sees them every 10 seconds."""
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_SECONDS", 0.0)


def test_training_piped_to_a_log_shows_progress_lines_and_ends_with_the_loss_and_what_next(
    tmp_path, every_update_printed
):
    config, run = write_config(tmp_path, train={"steps": 12}), tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("train: ")]
    assert len(lines) >= 10 and "train: 12/12 (100%)" in lines[-1]
    assert "loss " in lines[5] and "left" in lines[5] and "d=3 n=8" in lines[5]
    peak = RunDir(run).read_info()["peak_rss_mb"]
    assert "trained to step 12, loss " in result.output
    assert f"steps/s, peak memory {peak:,.0f} MB)" in " ".join(result.output.split())
    assert f"next: iclab eval {run}" in result.output


def test_evaluation_and_probes_say_what_they_are_doing_in_a_log(tmp_path, every_update_printed):
    config, run = write_config(tmp_path, train={"steps": 2}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    shifted = runner.invoke(app, ["eval", str(run), "--shift", "all", "--n-prompts", "16"])
    for learner in ("model", "least_squares", "averaging"):  # a line per learner and shift
        for under in ("", " under skewed_covariance", " under half_subspace"):
            assert f"evaluating {learner}{under}: " in shifted.output
    probed = runner.invoke(app, ["probe", str(run), "--probe", "gd_alignment(n_prompts=16)"])
    assert "probe gd_alignment(n_prompts=16): 1/1 (100%)" in probed.output


def test_a_log_gets_a_line_every_few_seconds_while_one_unit_of_work_runs_long():
    log = io.StringIO()
    with progress("fitting", 3, console=Console(file=log), every=0.05) as tracker:
        tracker.advance()
        time.sleep(0.5)  # one slow unit: about ten heartbeats are due
    lines = log.getvalue().splitlines()
    assert 4 <= len(lines) <= 12, lines  # a line per 0.05 s, none twice over
    assert all(line.startswith("fitting: 1/3 (33%), ") for line in lines)
    assert "about " in lines[-1]  # the time left, from the pace so far


def test_work_counted_in_units_a_reader_cannot_use_shows_only_its_share_done():
    log = io.StringIO()
    with progress("training", 4000, console=Console(file=log), count=False, fields=["runs"]) as bar:
        bar.update(1000, runs="1/3 done")
    assert log.getvalue().splitlines() == [
        "training: 25%, runs 1/3 done, 0s elapsed, about 0s left"
    ]


def test_a_line_falling_due_is_printed_once_when_the_work_and_the_heartbeat_both_reach_it():
    log = io.StringIO()
    tracker = Tracker("fitting", 3, Console(file=log), (), every=10.0, progress=None)
    tracker.last_line -= 10.0  # a line is due; the work sees it due, then the heartbeat prints
    tracker.beat()
    tracker.print_line(unless_printed_within=tracker.every)  # the work's print, a moment late
    assert len(log.getvalue().splitlines()) == 1


def test_the_heartbeat_keeps_quiet_while_nested_work_prints_its_own_lines():
    log = io.StringIO()
    console = Console(file=log)
    with (
        progress("outer", 1, console=console, every=0.2, transient=True),
        progress("inner", 40, console=console, every=0.02, transient=True) as inner,
    ):
        for _ in range(40):
            time.sleep(0.01)
            inner.advance()
    lines = log.getvalue().splitlines()
    assert sum(line.startswith("inner: ") for line in lines) >= 5
    assert not any(line.startswith("outer: ") for line in lines), lines


def test_resuming_a_finished_run_says_so_and_writes_nothing(tmp_path):
    config, run = write_config(tmp_path, train={"steps": 4}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    before = written(run)
    result = runner.invoke(app, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "has trained 4 of 4 steps: nothing to train" in result.output
    assert written(run) == before


def written(run: Path) -> dict[Path, int]:
    """When each file of a run was last written, but the lock (every training takes it)."""
    return {path: path.stat().st_mtime_ns for path in run.rglob("*") if path.name != ".lock"}


def test_a_resume_that_restretches_a_cosine_warns_and_decay_steps_keeps_the_schedule(tmp_path):
    cosine = {"steps": 20, "schedule": "cosine", "lr": 1e-3, "checkpoint_every": 20}
    run = tmp_path / "run"
    train_run(tiny_config(train=cosine), run, show_progress=False)
    longer = tiny_config(train={**cosine, "steps": 40})
    with pytest.warns(UserWarning, match=r"add --set train.decay_steps=20"):
        train_run(longer, run, resume=True, show_progress=False)
    before, kept = TrainConfig(**cosine), TrainConfig(**{**cosine, "steps": 40, "decay_steps": 20})
    assert schedule_jump(before, kept, 20) is None
    floor = before.min_lr_ratio * before.lr
    assert all(learning_rate(kept, step) == pytest.approx(floor) for step in (20, 30, 39))
    assert learning_rate(TrainConfig(**{**cosine, "steps": 40}), 20) > 5 * floor


def test_a_curriculum_that_ends_short_of_the_evaluated_size_is_announced(tmp_path):
    short = load_config("quickstart", ["train.steps=120"])
    message = curriculum_shortfall(short)
    assert message is not None and "reaches d=4, n_points=12" in message and "d=5" in message
    assert curriculum_shortfall(load_config("quickstart")) is None
    with pytest.warns(UserWarning, match="the curriculum reaches"):
        train_run(short.updated(train={"steps": 2}), tmp_path / "run", show_progress=False)


def test_the_loss_plot_marks_each_curriculum_stage():
    rows = [
        {"step": 25, "loss": 1.0, "n_dims": 2, "n_points": 6},
        {"step": 50, "loss": 0.9, "n_dims": 2, "n_points": 6},
        {"step": 75, "loss": 1.1, "n_dims": 3, "n_points": 9},
    ]
    assert curriculum_stages(rows) == [(25, "d=2 n=6"), (75, "d=3 n=9")]


def test_the_report_opens_with_the_result_shows_every_evaluation_and_others_may_read_it(tmp_path):
    run = tmp_path / "run"
    train_run(tiny_config(train={"steps": 3}), run, show_progress=False)
    evaluate_run(run)
    evaluate_run(run, ["eval.n_prompts=16"])
    path = write_report(run)
    text = path.read_text()
    assert '<p class="result">At k=6 (error): model ' in text
    assert "model − least_squares = " in text
    assert "Evaluation 001: " in text and "eval.n_prompts=16" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_an_override_that_misspells_a_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^--set train.step=3: train.step: unknown key; did you mean train.steps\?",
    ):
        load_config("quickstart", ["train.step=3"])
    with pytest.raises(ConfigError, match=r"did you mean softmax"):
        load_config("quickstart", ["model.mixer=softmx"])
    with pytest.raises(
        ConfigError, match=r"tagret: unknown key; did you mean train.stop_at.target\?"
    ):
        load_config("quickstart", ["train.stop_at.tagret=0.1"])  # a section that may be null
    with pytest.raises(ConfigError, match=r"unknown shift 'skewd'; did you mean skewed_covariance"):
        load_config("quickstart", ["eval.shifts=[skewd]"])  # a truncated name finds its long one


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("quickstrt", ["quickstart"]),  # close as a whole
        ("skewd", ["skewed_covariance"]),  # close to a beginning
        ("lin", ["linear_attention", "linear_self_attention"]),  # every name with that beginning
        ("xyz", []),
        ("", []),
    ],
)
def test_close_names_match_whole_names_or_their_beginnings(given, meant):
    names = ["quickstart", "skewed_covariance", "linear_attention", "linear_self_attention", "lstm"]
    assert close_names(given, names) == meant
    assert did_you_mean(given, names) == (f"; did you mean {' or '.join(meant)}?" if meant else "")


def test_eval_settings_record_what_was_used_and_the_prompt_length_is_checked_first(tmp_path):
    run = tmp_path / "run"
    train_run(tiny_config(train={"steps": 2}), run, show_progress=False)
    refused = runner.invoke(app, ["eval", str(run), "--n-points", "100000"])
    assert refused.exit_code == 2 and "learned position table" in refused.output
    assert RunDir(run).evaluations() == []
    assert yaml.safe_load((run / "config.yaml").read_text())["eval"]["n_points"] is None
    evaluate_run(run, ["eval.n_points=5"])
    settings = yaml.safe_load((latest_evaluation(run) / "settings.yaml").read_text())
    assert settings["eval"]["n_points"] == 5 and settings["overrides"] == ["eval.n_points=5"]
    assert math.isfinite(float(settings["checkpoint_step"]))


@pytest.mark.parametrize("command", ["--help", "tasks", "models", "algorithms", "shifts"])
def test_help_and_listings_need_no_torch(command):
    """They answer without importing torch (two seconds here, more on a busy machine)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom iclab.cli import app\ntry:\n    app([sys.argv[1]])\n"
        "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code, command], check=True, capture_output=True)


def test_curve_figures_keep_the_legend_off_the_curves_and_label_k_in_whole_examples():
    from iclab.evaluation.curves import CurvePoint
    from iclab.report.plots import curves_figure

    points = [
        CurvePoint(learner, "error", "none", k, 1 / (k + 1), 0.0, 1.0, 8)
        for learner in ("model", "least_squares")
        for k in range(9)
    ]
    figure = curves_figure(points, "t", "error", marker_k=3)
    axes = figure.axes[0]
    figure.canvas.draw()
    legend = axes.get_legend().get_window_extent()
    assert legend.x0 >= axes.get_window_extent().x1  # beside the axes, not over the curves
    ticks = [tick for tick in axes.get_xticks() if 0 <= tick <= 8]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    assert any(text.get_text() == "k = d = 3" for text in axes.texts)
