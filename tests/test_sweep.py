"""Sweeps: the sweep file, its expansion into trial configs, the Ray Tune run, the summary."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

import iclab
from conftest import latest_evaluation, tiny_config
from iclab.cli import app
from iclab.config import ConfigError
from iclab.run import RunDir, catalog, train_run
from iclab.sweeps import TrialJob, expand_trials, load_sweep, read_metric, run_sweep, run_trial
from iclab.sweeps.runner import TUNE_LOGGER, finished_rows, known_outcome, without_restore_hint
from iclab.sweeps.spec import parameter_values
from iclab.sweeps.summary import TrialRow

runner = CliRunner()
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHIPPED_SWEEPS = Path(iclab.__file__).parent / "configs" / "sweeps"


def write_sweep(directory, **fields):
    """A sweep over the tiny config (3 steps, 16 prompts) written beside its base config."""
    directory.mkdir(parents=True, exist_ok=True)
    base = tiny_config(
        train={"steps": 3},
        eval={"n_prompts": 16, "batch_size": 16, "algorithms": ["least_squares"]},
    )
    (directory / "tiny.yaml").write_text(base.to_yaml())
    spec = {"name": "tiny-sweep", "base": "tiny.yaml", "max_concurrent": 2, **fields}
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def model_headline(run_dir):
    """The model's mean at the largest k on the training distribution, read from curves.csv."""
    rows = [
        row
        for row in read_csv(latest_evaluation(run_dir) / "curves.csv")
        if row["learner"] == "model" and row["shift"] == "none"
    ]
    return float(max(rows, key=lambda row: int(row["k"]))["mean"])


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for the module's sweeps (run_sweep uses a running one and leaves it)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def grid_sweep(local_ray, tmp_path_factory):
    """2 learning rates × 2 widths of the tiny model, run once on Ray; returns (sweep file, out,
    result, the rows ``on_trial`` heard of)."""
    directory = tmp_path_factory.mktemp("grid")
    path = write_sweep(
        directory, parameters={"train.lr": [3.0e-3, 1.0e-3], "model.d_model": [16, 32]}
    )
    heard, lines = [], []
    result = run_sweep(path, directory / "out", on_trial=heard.append, on_progress=lines.append)
    return path, directory / "out", result, heard, lines


# --- the Ray run and its summary ----------------------------------------------------------------


def test_grid_sweep_trains_every_trial_as_a_normal_run(grid_sweep):
    _, out, result, _, _ = grid_sweep
    names = [row.trial for row in result.rows]
    assert names == [
        "trial-000-lr3e-03-d_model16",
        "trial-001-lr3e-03-d_model32",
        "trial-002-lr1e-03-d_model16",
        "trial-003-lr1e-03-d_model32",
    ]
    assert result.directory == (out / "tiny-sweep").resolve()
    for row in result.rows:
        run = RunDir(result.directory / row.trial)
        assert run.read_info()["status"] == "completed"
        assert run.latest_evaluation() is not None
        config = run.load_config()
        assert config.name == row.trial
        assert (config.train.lr, config.model.d_model) == (
            row.values["train.lr"],
            row.values["model.d_model"],
        )
        assert config.train.steps == 3  # the base config's, untouched by the sweep
    listed = {entry.name for entry in catalog.list_runs(result.directory)}
    assert listed == set(names)  # .tune, hidden, is not a run


def test_sweep_csv_holds_each_runs_headline_and_the_best_is_the_lowest_error(grid_sweep):
    _, _, result, _, _ = grid_sweep
    rows = read_csv(result.directory / "sweep.csv")
    assert list(rows[0]) == ["trial", "train.lr", "model.d_model", "status", "metric", "error"]
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "completed"
        assert float(row["metric"]) == pytest.approx(
            model_headline(result.directory / row["trial"]), rel=1e-12
        )
    best = min(rows, key=lambda row: float(row["metric"]))
    assert result.mode == "min" and result.measure == "error"
    assert result.best.trial == best["trial"]
    summary = json.loads((result.directory / "sweep.json").read_text())
    assert summary["best"]["trial"] == best["trial"]
    assert [row["trial"] for row in summary["rows"]] == [row["trial"] for row in rows]
    assert summary["spec"]["parameters"]["model.d_model"] == [16, 32]
    assert (result.directory / "sweep.png").stat().st_size > 10_000


def test_on_trial_hears_every_trial_once_with_its_outcome_and_each_start(grid_sweep):
    _, _, result, heard, lines = grid_sweep
    assert sorted(row.trial for row in heard) == [row.trial for row in result.rows]
    summary = {row.trial: row.metric for row in result.rows}
    assert {row.trial: row.metric for row in heard} == summary
    started = sorted(line.split()[1] for line in lines if line.startswith("started "))
    assert started == [row.trial for row in result.rows]
    assert all(" done, " in line and " running, " in line for line in lines)


def test_the_heartbeat_says_where_each_running_trial_is(tmp_path, monkeypatch):
    from iclab.sweeps import runner

    run_dir = tmp_path / "trial-000"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 40}\n{"step": 60}\n')
    job = runner.TrialJob("trial-000", {"train": {"steps": 100}}, str(run_dir), "loss", 1)
    lines = []
    events = runner.TrialEvents([job], {"trial-000": {}}, 1, None, lines.append)
    events.started_trial(0)
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.0)
    events.tick()
    assert lines[-1].startswith("sweep: 1/2 done, 1 running, ")
    assert lines[-1].endswith("trial-000 step 60/100")


def test_a_rerun_reads_completed_trials_back_without_training(grid_sweep, tmp_path):
    path, out, result, _, _ = grid_sweep
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    metrics = copy / "tiny-sweep" / result.rows[0].trial / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    again = run_sweep(path, copy)
    assert [(row.trial, row.metric) for row in again.rows] == [
        (row.trial, row.metric) for row in result.rows
    ]
    assert metrics.stat().st_mtime_ns == before


def test_a_rerun_into_runs_of_another_config_is_refused(grid_sweep, tmp_path):
    path, out, _, _, _ = grid_sweep
    shutil.copytree(out, tmp_path / "out")
    changed = yaml.safe_load(path.read_text()) | {"set": ["eval.n_prompts=32"]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    shutil.copy(out.parent / "tiny.yaml", tmp_path / "tiny.yaml")
    with pytest.raises(ConfigError, match=r"trial-000-lr3e-03-d_model16 holds a run of another"):
        run_sweep(path, tmp_path / "out")


def test_invalid_and_failing_trials_are_reported_and_the_others_run(local_ray, tmp_path):
    """n_heads=3 does not divide d_model=32 (invalid: never started); eval.n_points=40 passes
    validation but the learned position table covers the 8 trained points, so evaluation
    raises (failed). Through the CLI, whose progress lines come from a Tune callback."""
    path = write_sweep(tmp_path, parameters={"model.n_heads": [2, 3], "eval.n_points": [8, 40]})
    outcome = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 0, outcome.output
    directory = tmp_path / "out" / "tiny-sweep"
    table = {row["trial"]: row for row in read_csv(directory / "sweep.csv")}
    assert [row["status"] for row in table.values()] == [
        "completed",
        "failed",
        "invalid",
        "invalid",
    ]
    failed = table["trial-001-n_heads2-n_points40"]
    assert failed["error"].startswith("PromptTooLongError: ") and failed["metric"] == ""
    assert "prompts of 40 examples are longer than this model can read" in failed["error"]
    invalid = table["trial-002-n_heads3-n_points8"]
    assert "d_model (32) must be a multiple of 3" in invalid["error"]
    assert not (directory / invalid["trial"]).exists()
    assert json.loads((directory / "sweep.json").read_text())["best"]["trial"] == (
        "trial-000-n_heads2-n_points8"
    )
    assert "completed trial-000-n_heads2-n_points8: " in outcome.output  # as it finished
    assert outcome.output.count("failed trial-001-n_heads2-n_points40") == 2  # and with its error
    live = next(line for line in outcome.output.splitlines() if "failed trial-001" in line)
    assert "PromptTooLongError: prompts of 40 examples" in live  # read from Tune's error.txt
    assert "best: trial-000-n_heads2-n_points8" in outcome.output


class Crash(Exception):
    pass


def test_run_trial_resumes_an_interrupted_run_to_the_same_final_loss(tmp_path):
    config = tiny_config(train={"steps": 6, "checkpoint_every": 2})
    train_run(config, tmp_path / "straight", show_progress=False)

    def crash_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_run(config, tmp_path / "crashed", show_progress=False, on_step=crash_at_5)
    job = TrialJob("crashed", config.to_dict(), str(tmp_path / "crashed"), "loss", cpus=1)
    loss = run_trial(job)
    straight, crashed = RunDir(tmp_path / "straight"), RunDir(tmp_path / "crashed")
    assert crashed.read_info()["status"] == "completed"
    assert crashed.read_metrics() == [
        {**row, "time": crashed_row["time"]}
        for row, crashed_row in zip(straight.read_metrics(), crashed.read_metrics(), strict=True)
    ]
    assert loss == straight.read_metrics()[-1]["loss"]


# --- the command line ---------------------------------------------------------------------------


def test_cli_prints_the_trials_best_first_and_the_best_one(grid_sweep, tmp_path):
    path, out, result, _, _ = grid_sweep
    shutil.copytree(out, tmp_path / "out")  # completed trials: read back, no Ray needed
    outcome = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 0, outcome.output
    for row in result.rows:
        assert row.trial in outcome.output
    assert f"best: {result.best.trial}" in outcome.output
    ranked = [row.trial for row in result.ranked()]
    positions = [outcome.output.index(f"│ {trial}") for trial in ranked]
    assert positions == sorted(positions)
    assert "sweep.csv, sweep.json, sweep.png" in outcome.output


def test_cli_exits_1_when_no_trial_completes(tmp_path):
    path = write_sweep(tmp_path, parameters={"model.n_heads": [3, 5]})  # neither divides 32
    outcome = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 1, outcome.output
    assert "every trial failed or was invalid" in outcome.output
    assert "must be a multiple of 3" in outcome.output
    assert not (tmp_path / "out" / "tiny-sweep" / "sweep.png").exists()


# --- expansion, no Ray --------------------------------------------------------------------------


RANDOM = {
    "search": "random",
    "samples": 6,
    "seed": 7,
    "parameters": {
        "train.lr": {"distribution": "loguniform", "low": 1.0e-5, "high": 1.0e-2},
        "train.weight_decay": {"distribution": "uniform", "low": 0.0, "high": 0.1},
        "model.n_layers": {"distribution": "randint", "low": 1, "high": 4},
        "model.mixer": ["softmax", "linear_attention"],
    },
}


def test_random_search_with_one_seed_gives_the_same_trials(tmp_path):
    first = expand_trials(load_sweep(write_sweep(tmp_path / "a", **RANDOM)))
    second = expand_trials(load_sweep(write_sweep(tmp_path / "b", **RANDOM)))
    other = expand_trials(load_sweep(write_sweep(tmp_path / "c", **(RANDOM | {"seed": 8}))))
    assert [(t.name, t.values) for t in first] == [(t.name, t.values) for t in second]
    assert [t.values for t in first] != [t.values for t in other]
    assert len(first) == 6


def test_random_values_lie_in_range_with_the_right_types(tmp_path):
    trials = expand_trials(load_sweep(write_sweep(tmp_path, **RANDOM)))
    for trial in trials:
        assert trial.problem is None
        lr, n_layers = trial.values["train.lr"], trial.values["model.n_layers"]
        assert 1e-5 <= lr < 1e-2
        assert 0.0 <= trial.values["train.weight_decay"] < 0.1
        assert type(n_layers) is int and 1 <= n_layers < 4
        assert trial.values["model.mixer"] in ("softmax", "linear_attention")
        assert (trial.config.train.lr, trial.config.model.n_layers) == (lr, n_layers)
        assert NAME_PATTERN.match(trial.name) and trial.config.name == trial.name
    assert len({trial.values["model.n_layers"] for trial in trials}) > 1


def test_float_values_reach_the_config_exactly(tmp_path):
    """PyYAML reads 1e-05 as a string: values are written as overrides it reads as floats."""
    lrs = [1e-05, 2.5e-07, 0.1, 123456.0]
    trials = expand_trials(load_sweep(write_sweep(tmp_path, parameters={"train.lr": lrs})))
    assert [trial.config.train.lr for trial in trials] == lrs
    assert [trial.name for trial in trials] == [
        "trial-000-lr1e-05",
        "trial-001-lr2.5e-07",
        "trial-002-lr0.1",
        "trial-003-lr1.23e05",
    ]


def test_grid_repeats_train_with_successive_seeds(tmp_path):
    path = write_sweep(tmp_path, samples=2, parameters={"model.d_model": [16, 32]})
    trials = expand_trials(load_sweep(path))
    assert [trial.name for trial in trials] == [
        "trial-000-d_model16-r0",
        "trial-001-d_model32-r0",
        "trial-002-d_model16-r1",
        "trial-003-d_model32-r1",
    ]
    assert [trial.config.train.seed for trial in trials] == [0, 0, 1, 1]


def test_trial_names_keep_sections_that_tell_parameters_apart(tmp_path):
    path = write_sweep(tmp_path, parameters={"train.seed": [1], "eval.seed": [2]})
    (trial,) = expand_trials(load_sweep(path))
    assert trial.name == "trial-000-train_seed1-eval_seed2"


def test_task_options_of_the_base_family_are_parameters(tmp_path):
    path = write_sweep(
        tmp_path,
        set=["task.name=sparse_linear_regression"],
        parameters={"task.sparsity": [2]},
    )
    (trial,) = expand_trials(load_sweep(path))
    assert trial.config.task.options["sparsity"] == 2


# --- sweep file errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"parameters": {"train.lr": [1.0e-3]}, "sampels": 3}, r"sweep.yaml: sampels: unknown key"),
        ({"parameters": {"train.lrr": [1.0e-3]}}, r"parameters: train.lrr: train has no field"),
        ({"parameters": {"trian.lr": [1.0e-3]}}, r"the config has no field 'trian'"),
        ({"parameters": {"train.steps.x": [1]}}, r"train.steps is a value, not a section"),
        ({"parameters": {"task.sparsity": [2]}}, r"task has no field 'sparsity'"),
        ({"parameters": {"train.lr": [1.0e-3]}, "set": ["train.stepz=2"]}, r"set: train.stepz"),
        ({"parameters": {}}, r"parameters: .*at least 1 item"),
        ({"parameters": {"train.lr": []}}, r"train.lr: give a non-empty list"),
        ({"parameters": {"train.lr": [1.0e-3]}, "search": "bayes"}, r"search: Input should be"),
        (
            {"parameters": {"train.lr": {"distribution": "loguniform", "low": 0.1, "high": 1}}},
            r"parameters: train.lr: a loguniform distribution needs search: random",
        ),
        (
            {
                "search": "random",
                "parameters": {"train.lr": {"distribution": "loguniform", "low": 0, "high": 1}},
            },
            r"train.lr: loguniform needs low > 0",
        ),
        (
            {
                "search": "random",
                "parameters": {"train.lr": {"distribution": "normal", "low": 0, "high": 1}},
            },
            r"train.lr: distribution: Input should be 'loguniform', 'uniform' or 'randint'",
        ),
        ({"parameters": {"name": ["a"]}}, r"name: every trial is named"),
        ({"base": "nowhere.yaml", "parameters": {"train.lr": [1.0]}}, r"base: no config file"),
    ],
)
def test_sweep_file_errors_name_the_file_and_field(tmp_path, fields, message):
    path = write_sweep(tmp_path, **fields)
    with pytest.raises(ConfigError, match=message) as caught:
        load_sweep(path)
    assert str(caught.value).startswith(str(path))


def test_an_address_where_no_cluster_listens_fails_fast(tmp_path):
    """Ray itself retries such an address for many minutes."""
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_sweep(tmp_path, parameters={"train.lr": [1.0e-3]})
    arguments = ["sweep", str(path), "--out", str(tmp_path / "out")]
    outcome = runner.invoke(app, [*arguments, "--address", f"127.0.0.1:{port}"])
    assert outcome.exit_code == 2
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers there" in outcome.output
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_sweep_file_error_in_one_line(tmp_path):
    path = write_sweep(tmp_path, parameters={"train.lrr": [1.0e-3]})
    outcome = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 2
    assert "train has no field 'lrr'" in outcome.output
    assert "Traceback" not in outcome.output


@pytest.mark.parametrize("path", sorted(SHIPPED_SWEEPS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_file_loads_and_each_trial_is_a_valid_config(path):
    spec = load_sweep(path)
    trials = expand_trials(spec)
    assert len(trials) == len(list(parameter_values(spec))) > 1
    assert all(trial.problem is None for trial in trials), [t.problem for t in trials]
    # a sweep compares its trials at one budget: none may stop early at a preset's target
    assert all(trial.config.train.stop_at is None for trial in trials)


def test_a_sweep_stopped_before_every_trial_ran_says_how_to_go_on(tmp_path, monkeypatch):
    """Tune's fit() returns early on Ctrl-C with only the trials it finished: a clear message,
    not a KeyError from the summary."""
    path = write_sweep(tmp_path, parameters={"train.lr": [1.0e-3, 2.0e-3, 3.0e-3]})

    def first_only(spec, jobs, values, directory, address, reporter):
        job = jobs[0]
        return {job.name: TrialRow(job.name, values[job.name], "completed", metric=0.5)}

    monkeypatch.setattr("iclab.sweeps.runner.run_on_ray", first_only)
    outcome = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 2, outcome.output
    assert "stopped with 1 of 3 trials done" in outcome.output
    assert "run the same command again" in outcome.output


def test_a_completed_trial_at_precision_auto_is_read_back(tmp_path):
    """The trainer writes ``precision: auto`` as what the device ran (bfloat16 or float32): a
    rerun of the sweep still recognises the trial's run as its own."""
    path = write_sweep(
        tmp_path, parameters={"train.lr": [1.0e-3, 2.0e-3]}, set=["train.precision=auto"]
    )
    spec = load_sweep(path)
    trial = expand_trials(spec)[0]
    directory = tmp_path / "out" / spec.name
    run_dir = directory / trial.name
    run_trial(TrialJob(trial.name, trial.config.to_dict(), str(run_dir), spec.metric, cpus=1))
    assert RunDir(run_dir).load_config().train.precision in ("float32", "bfloat16")
    row = known_outcome(trial, directory, spec.metric)
    assert row is not None and row.status == "completed"
    assert row.metric == read_metric(RunDir(run_dir), spec.metric)


def test_trials_tune_was_still_running_when_stopped_are_left_out_not_failed():
    """On Ctrl-C Tune returns every trial it started; those that never finished carry no
    metric and must be run again, not reported as failed."""
    config = tiny_config().to_dict()
    jobs = [TrialJob(f"trial-{i}", config, f"runs/trial-{i}", "loss", cpus=1) for i in range(3)]
    values = {job.name: {"train.lr": 0.001 * (i + 1)} for i, job in enumerate(jobs)}
    results = [
        SimpleNamespace(config={"trial": 0}, metrics={"value": 0.5}, error=None),
        SimpleNamespace(config={"trial": 1}, metrics={}, error=None),  # still running
        SimpleNamespace(config={"trial": 2}, metrics={}, error=RuntimeError("boom")),
    ]
    rows = finished_rows(results, jobs, values, finished={"trial-0", "trial-2"})
    assert set(rows) == {"trial-0", "trial-2"}
    assert rows["trial-0"].status == "completed" and rows["trial-0"].metric == 0.5
    assert rows["trial-2"].status == "failed"


def test_tunes_hint_to_resume_with_tuner_restore_is_dropped_and_other_warnings_kept():
    """On Ctrl-C Tune logs "Resume experiment with: Tuner.restore(...)"; iclab says to run the
    same command again, and only that instruction should reach the user. (A handler on Tune's
    logger itself, at WARNING: Ray's logging setup in earlier tests may raise its level.)"""
    logger, shown = logging.getLogger(TUNE_LOGGER), []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: shown.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with without_restore_hint():
            logger.warning(
                "Experiment has been interrupted.\nResume experiment with: Tuner.restore(x)"
            )
            logger.warning("a trial is slow")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert shown == ["a trial is slow"]
    assert not logger.filters  # the filter does not outlive the sweep
