"""MLflow tracking: the run's params, every logged step and its status reach a real local store;
a resumed run continues the same MLflow run without logging a step twice; without the config
section mlflow is never imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import tiny_config
from iclab.config import ConfigError
from iclab.run import RunDir, train_run
from iclab.run.tracking import open_tracker


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite store for the module: creating its tables takes seconds, runs take little."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def tracked_config(tracking_uri: str, **train):
    return tiny_config(
        logging={"mlflow": {"tracking_uri": tracking_uri, "experiment": "tests"}}, train=train
    )


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def jsonl_history(run: RunDir, field: str) -> list[tuple[int, float]]:
    return [(row["step"], float(row[field])) for row in run.read_metrics()]


class Crash(Exception):
    pass


def crash_at(step: int):
    def on_step(current: int, loss: float) -> None:
        if current == step:
            raise Crash

    return on_step


def test_a_tracked_run_logs_its_config_every_logged_step_and_its_end(tmp_path, tracking_uri):
    config = tracked_config(tracking_uri)
    run = RunDir(tmp_path / "run")
    train_run(config, run.path, show_progress=False)

    client = MlflowClient(tracking_uri)
    run_id = run.read_info()["mlflow_run_id"]
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "tiny"
    assert client.get_experiment(logged.info.experiment_id).name == "tests"
    assert logged.data.params["model.d_model"] == "32"
    assert logged.data.params["train.steps"] == "30"
    assert logged.data.params["task.name"] == "linear_regression"
    assert logged.data.tags["iclab.config_hash"] == run.load_config().digest()
    assert logged.data.tags["iclab.run_dir"] == str(run.path.resolve())
    assert len(jsonl_history(run, "loss")) == 30
    for key, field in [("loss", "loss"), ("lr", "lr"), ("n_dims", "n_dims")]:
        assert history(client, run_id, f"train/{key}") == jsonl_history(run, field)


def test_resuming_for_more_steps_extends_the_same_mlflow_run(tmp_path, tracking_uri):
    run = RunDir(tmp_path / "run")
    train_run(tracked_config(tracking_uri), run.path, show_progress=False)
    run_id = run.read_info()["mlflow_run_id"]

    train_run(tracked_config(tracking_uri, steps=40), run.path, resume=True, show_progress=False)

    client = MlflowClient(tracking_uri)
    assert run.read_info()["mlflow_run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    losses = history(client, run_id, "train/loss")
    assert [step for step, _ in losses] == list(range(1, 41))
    assert losses == jsonl_history(run, "loss")


def test_a_crashed_run_ends_failed_and_its_resume_logs_no_step_twice(tmp_path, tracking_uri):
    config = tracked_config(tracking_uri)  # checkpoints every 10 steps
    run = RunDir(tmp_path / "run")
    with pytest.raises(Crash):
        train_run(config, run.path, show_progress=False, on_step=crash_at(25))
    client = MlflowClient(tracking_uri)
    run_id = run.read_info()["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "FAILED"
    assert len(history(client, run_id, "train/loss")) == 25

    train_run(config, run.path, resume=True, show_progress=False)  # redoes steps 21-30

    assert client.get_run(run_id).info.status == "FINISHED"
    losses = history(client, run_id, "train/loss")
    assert [step for step, _ in losses] == list(range(1, 31))
    assert losses == jsonl_history(run, "loss")


def test_ctrl_c_ends_the_mlflow_run_killed(tmp_path, tracking_uri):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(KeyboardInterrupt), open_tracker(tracked_config(tracking_uri), run):
        raise KeyboardInterrupt
    run_id = run.read_info()["mlflow_run_id"]
    assert MlflowClient(tracking_uri).get_run(run_id).info.status == "KILLED"


def test_resuming_with_a_store_that_lacks_the_run_is_a_clear_error(tmp_path, tracking_uri):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.update_info(mlflow_run_id="0123456789abcdef0123456789abcdef")
    with pytest.raises(ConfigError, match=r"delete mlflow_run_id from run\.json"):
        open_tracker(tracked_config(tracking_uri), run)


def test_a_config_without_logging_never_imports_mlflow(tmp_path):
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from conftest import tiny_config\n"
        "from iclab.run import train_run\n"
        f"train_run(tiny_config(train={{'steps': 2}}), {str(tmp_path / 'run')!r}, "
        "show_progress=False)\n"
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert RunDir(tmp_path / "run").read_info()["status"] == "completed"


def test_a_store_mlflow_cannot_open_is_a_config_error_naming_the_uri(tmp_path):
    (tmp_path / "file").write_text("")
    config = tracked_config(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    with pytest.raises(ConfigError, match=r"logging\.mlflow\.tracking_uri 'sqlite:.*MLflow cannot"):
        open_tracker(config, RunDir(tmp_path / "run"))


@pytest.mark.parametrize(
    ("mlflow_section", "message"),
    [
        ({"tracking_uri": ""}, "logging.mlflow.tracking_uri: String should have at least 1"),
        ({}, "logging.mlflow.tracking_uri: Field required"),
        ({"tracking_uri": "sqlite:///x.db", "run": "a"}, "logging.mlflow.run: unknown key"),
    ],
)
def test_a_bad_mlflow_section_is_a_config_error_naming_the_field(mlflow_section, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(logging={"mlflow": mlflow_section})


def test_tracking_without_mlflow_installed_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    config = tracked_config(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ConfigError, match=r"pip install 'iclab\[mlflow\]'"):
        open_tracker(config, RunDir(tmp_path / "run"))
