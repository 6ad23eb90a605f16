"""The command line: the train → eval path, listings, and clear errors instead of tracebacks."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml
from typer.testing import CliRunner

from conftest import latest_evaluation, tiny_config
from iclab.cli import app
from iclab.models.mixers import MIXERS

runner = CliRunner()


def write_config(tmp_path, **sections):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config(**sections).to_yaml())
    return path


def test_train_then_eval_writes_curves_and_plots(tmp_path):
    config = write_config(tmp_path)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 0, result.output
    evaluation = latest_evaluation(run)
    with (evaluation / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["learner"] for row in rows} == {"model", "least_squares", "averaging"}
    assert {row["shift"] for row in rows} == {"none"}
    assert {int(row["n_prompts"]) for row in rows} == {64}
    assert (evaluation / "curves.png").stat().st_size > 10_000
    assert (run / "plots" / "loss.png").exists()


def test_set_overrides_reach_the_run(tmp_path):
    config, run = write_config(tmp_path), tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(config), "--out", str(run), "--set", "train.steps=5", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "steps: 5" in (run / "config.yaml").read_text()


def test_bad_override_is_a_one_line_error_naming_the_field(tmp_path):
    result = runner.invoke(app, ["train", str(write_config(tmp_path)), "--set", "train.lr=-1"])
    assert result.exit_code == 2
    assert "train.lr" in result.output and "Traceback" not in result.output


def test_eval_of_a_missing_run_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "not a run directory" in result.output


def test_a_misspelt_run_preset_or_shift_is_answered_with_the_name_meant(tmp_path):
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "config.yaml").write_text("{}")
    (tmp_path / "q-not-a-run").mkdir()  # a directory without config.yaml is no suggestion
    run = runner.invoke(app, ["eval", str(tmp_path / "q")])
    assert run.exit_code == 2
    assert f"did you mean {tmp_path / 'qs'}?" in " ".join(run.output.split())
    preset = runner.invoke(app, ["train", "quickstrt"])
    assert preset.exit_code == 2 and "did you mean quickstart?" in preset.output
    nothing = runner.invoke(app, ["train", "zzzzzz"])
    assert nothing.exit_code == 2 and "did you mean" not in nothing.output


def test_resume_and_config_together_is_refused(tmp_path):
    result = runner.invoke(app, ["train", "quickstart", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not both" in result.output


def test_listings_name_what_is_registered():
    tasks = runner.invoke(app, ["tasks"])
    assert (
        tasks.exit_code == 0 and "linear_regression" in tasks.output and "noise_std" in tasks.output
    )
    models = runner.invoke(app, ["models"], terminal_width=200)
    assert models.exit_code == 0
    for name, _ in MIXERS:
        assert f"\n{name}: " in models.output
    words = " ".join(models.output.split())  # wherever the listing wraps its lines
    assert "2·E·t (KV cache) (+E·(short_conv − 1)) (t=64: 32,768, t=1024: 524,288)" in words
    assert "state: 2·E (t=64: 512, t=1024: 512)" in models.output  # LSTM: h and c
    assert "positions='learned'" in models.output and "target_params" in models.output
    assert "(extra [gpu])" in models.output  # descriptions are text, not rich markup
    algorithms = runner.invoke(app, ["algorithms"])
    for name in ("least_squares", "ridge", "knn", "averaging", "bayes_optimal", "zero"):
        assert name in algorithms.output


def test_eval_without_a_model_runs_the_named_algorithms_on_a_task(tmp_path):
    out = tmp_path / "yardsticks"
    result = runner.invoke(
        app,
        [
            "eval",
            "--task",
            "linear_regression",
            "--algorithms",
            "least_squares, knn(k=1),ridge(alpha=2)",
            "--set",
            "task.n_dims=3",
            "--set",
            "task.n_points=9",
            "--n-prompts",
            "40",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with (out / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["learner"] for row in rows} == {"least_squares", "knn(k=1)", "ridge(alpha=2)"}
    assert {int(row["k"]) for row in rows} == set(range(9))
    assert {row["metric"] for row in rows} == {"error"}
    exact = [float(r["mean"]) for r in rows if r["learner"] == "least_squares" and int(r["k"]) > 3]
    assert max(exact) < 1e-8  # d = 3 noiseless examples determine w
    assert (out / "curves.png").exists()


def test_eval_without_algorithms_uses_the_task_yardsticks():
    result = runner.invoke(
        app, ["eval", "--task", "linear_regression", "--set", "task.n_dims=2", "--n-prompts", "8"]
    )
    assert result.exit_code == 0, result.output
    from iclab.tasks.regression import LinearRegression

    for name in LinearRegression.yardsticks:
        assert name in result.output


def test_eval_rejects_an_algorithm_that_does_not_fit_the_task_or_has_a_bad_option():
    wrong = runner.invoke(app, ["eval", "--task", "linear_regression", "--algorithms", "knn(j=2)"])
    assert wrong.exit_code == 2 and "option" in wrong.output and "k=3" in wrong.output
    unknown = runner.invoke(app, ["eval", "--task", "linear_regression", "--algorithms", "nope"])
    assert unknown.exit_code == 2 and "unknown algorithm 'nope'" in unknown.output
    missing = runner.invoke(app, ["eval"])
    assert missing.exit_code == 2 and "--task" in missing.output


def test_eval_with_all_shifts_prints_each_shift_and_the_paired_difference(tmp_path):
    config, run = write_config(tmp_path, train={"steps": 4}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    trained = (run / "config.yaml").read_text()
    result = runner.invoke(app, ["eval", str(run), "--shift", "all", "--n-prompts", "32"])
    assert result.exit_code == 0, result.output
    assert "under each shift" in result.output and "half_subspace" in result.output
    assert "model − least_squares" in result.output
    assert (run / "config.yaml").read_text() == trained  # evaluating never rewrites it
    all_shifts = latest_evaluation(run)
    assert "- all" in (all_shifts / "settings.yaml").read_text()
    result = runner.invoke(app, ["eval", str(run), "--shift", "none", "--n-prompts", "32"])
    assert result.exit_code == 0, result.output
    with (latest_evaluation(run) / "curves.csv").open() as handle:
        assert {row["shift"] for row in csv.DictReader(handle)} == {"none"}
    assert (all_shifts / "curves-half_subspace.png").exists()  # the earlier one is kept


def test_an_unknown_shift_is_a_clear_error(tmp_path):
    config, run = write_config(tmp_path, train={"steps": 2}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    result = runner.invoke(app, ["eval", str(run), "--shift", "tilt"])
    assert result.exit_code == 2
    assert "unknown shift 'tilt'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["eval", str(run), "--shift", "al"])  # the keyword, misspelt
    assert result.exit_code == 2 and "did you mean all?" in " ".join(result.output.split())


def test_probe_writes_its_files_and_the_report_shows_them(tmp_path):
    config, run = write_config(tmp_path, train={"steps": 4}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    result = runner.invoke(app, ["probe", str(run), "--probe", "gd_alignment(n_prompts=32)"])
    assert result.exit_code == 0, result.output
    assert "sensitivity_cosine" in result.output
    written = run / "probes" / "gd_alignment-n_prompts-32"
    assert {path.name for path in written.iterdir()} == {
        "summary.json",
        "alignment.csv",
        "alignment.png",
    }
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
    report = (run / "report.html").read_text()
    assert "<h2>Probes</h2>" in report and "gd_alignment(n_prompts=32)" in report


def test_an_unknown_probe_is_a_clear_error_and_probes_lists_them(tmp_path):
    config, run = write_config(tmp_path, train={"steps": 2}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    result = runner.invoke(app, ["probe", str(run), "--probe", "telepathy"])
    assert result.exit_code == 2 and "unknown probe 'telepathy'" in result.output
    listing = runner.invoke(app, ["probes"])
    assert "gd_alignment" in listing.output and "linear_probe" in listing.output


def test_threads_option_sets_torch_threads_and_rejects_zero(tmp_path, monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    config, run = write_config(tmp_path, train={"steps": 2}), tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(config), "--out", str(run), "--no-progress", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [1]
    assert runner.invoke(app, ["train", str(config), "--threads", "0"]).exit_code == 2
    evaluated = runner.invoke(app, ["eval", str(run), "--no-progress", "--threads", "2"])
    assert evaluated.exit_code == 0, evaluated.output
    assert calls == [1, 2]


def test_a_user_error_is_one_line_and_debug_shows_its_traceback(tmp_path):
    from iclab.errors import RunNotFoundError

    plain = runner.invoke(app, ["eval", str(tmp_path / "nothing")])
    assert plain.exit_code == 2 and plain.output.count("\n") == 1
    debug = runner.invoke(app, ["--debug", "eval", str(tmp_path / "nothing")])
    assert isinstance(debug.exception, RunNotFoundError)


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch):
    from iclab.report import listings

    def broken_listing(snapshot, section):
        raise ValueError("an internal bug")

    monkeypatch.setattr(listings, "listing", broken_listing)
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "error:" not in result.output


def test_resume_with_a_config_the_checkpoint_does_not_fit_writes_nothing(tmp_path):
    config, run = write_config(tmp_path, train={"steps": 10}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    before = run_files(run)
    result = runner.invoke(
        app, ["train", "--resume", str(run), "--set", "model.d_model=64", "--no-progress"]
    )
    assert result.exit_code == 2 and "does not fit" in result.output
    assert run_files(run) == before


def run_files(run: Path) -> dict[Path, bytes]:
    """Every file of a run and its bytes, but the lock (which every training takes)."""
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


def test_eval_takes_eval_fields_only_and_never_rewrites_the_training_config(tmp_path):
    config, run = write_config(tmp_path, train={"steps": 2}), tmp_path / "run"
    runner.invoke(app, ["train", str(config), "--out", str(run), "--no-progress"])
    trained = (run / "config.yaml").read_bytes()
    refused = runner.invoke(app, ["eval", str(run), "--set", "train.steps=5"])
    assert refused.exit_code == 2 and "eval.* fields only" in refused.output
    assert not (run / "eval").exists()
    result = runner.invoke(app, ["eval", str(run), "--set", "eval.seed=7", "--n-prompts", "8"])
    assert result.exit_code == 0, result.output
    assert (run / "config.yaml").read_bytes() == trained
    settings = yaml.safe_load((latest_evaluation(run) / "settings.yaml").read_text())
    assert settings["eval"]["seed"] == 7 and settings["eval"]["n_prompts"] == 8
    assert settings["checkpoint_step"] == 2


def test_eval_of_algorithms_alone_says_nothing_was_written_without_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["eval", "--task", "linear_regression", "--set", "task.n_dims=2", "--n-prompts", "8"]
    )
    assert result.exit_code == 0 and "nothing written" in result.output
    assert list(tmp_path.iterdir()) == []
