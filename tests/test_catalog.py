"""The run registry: an SQLite index that lists runs and stays a cache of the run directories."""

from __future__ import annotations

import csv
import shutil
import sqlite3
import threading

import pytest
from typer.testing import CliRunner

from conftest import latest_evaluation, tiny_config
from iclab.cli import app
from iclab.registry import UnknownNameError
from iclab.run import catalog, evaluate_run, train_run

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory):
    """Two tiny trained runs, ``alpha`` (evaluated) and ``sweep/beta`` (another task, a smaller
    model, not evaluated); tests copy it, so each may change its copy."""
    root = tmp_path_factory.mktemp("runs")
    train_run(tiny_config(train={"steps": 4}), root / "alpha", show_progress=False)
    beta = tiny_config(task={"name": "noisy_linear_regression"}, model={"n_layers": 1})
    beta = beta.model_copy(
        update={"name": "beta", "train": beta.train.model_copy(update={"steps": 3})}
    )
    train_run(beta, root / "sweep" / "beta", show_progress=False)
    evaluate_run(root / "alpha")
    return root


@pytest.fixture
def root(trained_root, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(trained_root, copy)
    assert not list(copy.rglob(f"{catalog.INDEX_NAME}*"))  # training writes no index
    return copy


def by_name(entries):
    return {entry.name: entry for entry in entries}


def model_mean_at_largest_k(curves_path):
    with curves_path.open() as handle:
        rows = [
            r for r in csv.DictReader(handle) if r["learner"] == "model" and r["shift"] == "none"
        ]
    return float(max(rows, key=lambda row: int(row["k"]))["mean"])


def test_listing_describes_both_runs_from_their_directories(root):
    entries = by_name(catalog.list_runs(root))
    assert set(entries) == {"alpha", "sweep/beta"}
    alpha, beta = entries["alpha"], entries["sweep/beta"]
    assert (alpha.task, alpha.n_dims, alpha.n_points) == ("linear_regression", 3, 8)
    assert alpha.task_label == "linear_regression d=3 n=8"
    assert beta.task == "noisy_linear_regression"
    assert (alpha.model, beta.model) == ("2 × softmax", "1 × softmax")
    assert alpha.n_params > beta.n_params > 0
    assert (alpha.steps, alpha.total_steps, beta.steps, beta.total_steps) == (4, 4, 3, 3)
    assert alpha.status == beta.status == "completed"
    assert alpha.path == (root / "alpha").resolve()
    alpha_curves = latest_evaluation(root / "alpha") / "curves.csv"
    assert alpha.headline == pytest.approx(model_mean_at_largest_k(alpha_curves))
    assert alpha.headline_metric == "error"
    assert (beta.headline, beta.headline_metric) == (None, None)
    assert alpha.created <= alpha.updated
    assert (root / catalog.INDEX_NAME).exists()


def test_index_is_a_cache_deleting_or_rebuilding_it_gives_the_same_entries(root):
    before = catalog.list_runs(root, sort="name")
    (root / catalog.INDEX_NAME).unlink()
    assert catalog.list_runs(root, sort="name") == before
    catalog.rebuild(root)
    assert catalog.list_runs(root, sort="name") == before


def test_sync_rereads_a_run_whose_files_changed(root):
    assert by_name(catalog.list_runs(root))["sweep/beta"].headline is None
    alpha_curves = latest_evaluation(root / "alpha") / "curves.csv"
    (root / "sweep/beta/eval/001").mkdir(parents=True)
    shutil.copyfile(alpha_curves, root / "sweep/beta/eval/001/curves.csv")
    catalog.sync(root)
    beta = catalog.get_run(root, "sweep/beta")
    assert beta.headline == pytest.approx(model_mean_at_largest_k(alpha_curves))


def test_a_run_removed_by_hand_is_pruned_with_a_warning(root):
    catalog.sync(root)
    shutil.rmtree(root / "sweep" / "beta")
    with pytest.warns(UserWarning, match="sweep/beta was removed; dropped from the index"):
        entries = catalog.list_runs(root)
    assert [entry.name for entry in entries] == ["alpha"]


def test_filters_and_sort_select_and_order_runs(root):
    names = lambda **query: [entry.name for entry in catalog.list_runs(root, **query)]  # noqa: E731
    assert names(sort="n_params", descending=False) == ["sweep/beta", "alpha"]
    assert names(sort="n_params", descending=True) == ["alpha", "sweep/beta"]
    assert names(sort="n_params", descending=True, limit=1) == ["alpha"]
    assert names(task="noisy_linear_regression") == ["sweep/beta"]
    assert names(model="2 ×") == ["alpha"]
    assert names(model="SOFTMAX", sort="name", descending=False) == ["alpha", "sweep/beta"]
    assert names(status="running") == []
    # headline: evaluated runs first in either order, the unevaluated one last
    assert names(sort="headline", descending=False) == ["alpha", "sweep/beta"]


def test_an_unknown_sort_field_is_an_error_naming_the_allowed_ones(root):
    with pytest.raises(ValueError, match=r"cannot sort runs by 'speed'.*n_params.*headline"):
        catalog.list_runs(root, sort="speed")


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("garbage bytes", ""),
        ("foreign database", ""),
        ("newer schema", "written by a newer iclab"),
        ("older schema", "written by an older iclab"),
    ],
)
def test_an_unusable_index_is_rebuilt_with_a_warning(root, damage, said):
    index = root / catalog.INDEX_NAME
    if damage == "garbage bytes":
        index.write_bytes(b"\x00\xffnot sqlite at all" * 100)
    else:
        with sqlite3.connect(index) as connection:
            connection.execute("CREATE TABLE runs (name TEXT)")
            shift = {"newer schema": 1, "older schema": -1}.get(damage)
            if shift is not None:
                connection.execute(f"PRAGMA user_version = {catalog.SCHEMA_VERSION + shift}")
        connection.close()
    with pytest.warns(UserWarning, match=f"index.sqlite .*{said}.*rebuilding it"):
        entries = catalog.list_runs(root)
    assert {entry.name for entry in entries} == {"alpha", "sweep/beta"}
    with sqlite3.connect(index) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == catalog.SCHEMA_VERSION
    connection.close()


@pytest.mark.parametrize(
    ("file", "content", "problem"),
    [
        ("config.yaml", "task: [unclosed", "config.yaml"),
        ("config.yaml", "task:\n  name: no_such_task\n", "no_such_task"),
        ("run.json", "{not json", "run.json"),
    ],
)
def test_a_broken_run_directory_is_listed_as_broken_with_the_reason(root, file, content, problem):
    (root / "alpha" / file).write_text(content)
    entries = by_name(catalog.list_runs(root))
    assert entries["alpha"].status == "broken" and problem in entries["alpha"].problem
    assert entries["sweep/beta"].status == "completed"


def test_a_running_run_counts_logged_steps_and_ignores_a_half_written_line(root):
    run = root / "alpha"
    (run / "run.json").write_text('{"status": "running", "steps": 2}')
    with (run / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 5, "loss": 0.1}\n{"step": 6, "lo')
    alpha = catalog.get_run(root, "alpha")
    assert (alpha.status, alpha.steps) == ("running", 5)


def test_training_and_evaluating_write_no_index_outside_their_run(tmp_path):
    run = tmp_path / "out" / "run"
    train_run(tiny_config(train={"steps": 2}), run, show_progress=False)
    evaluate_run(run, ["eval.n_prompts=8"])
    written = {path.relative_to(tmp_path).parts[:2] for path in tmp_path.rglob("*")}
    assert written <= {("out",), ("out", "run")}  # nothing beside the run directory


def test_an_index_that_cannot_be_written_still_lists_with_a_warning(root):
    (root / catalog.INDEX_NAME).mkdir()  # a directory where the index file should be
    with pytest.warns(UserWarning, match=r"index\.sqlite"):
        names = [entry.name for entry in catalog.list_runs(root, sort="name", descending=False)]
    assert names == ["alpha", "sweep/beta"]


def test_concurrent_listings_leave_a_consistent_index(root):
    for i in range(6):
        shutil.copytree(root / "sweep" / "beta", root / "sweep" / f"trial-{i}")
    failures = []

    def list_all():
        try:
            for _ in range(3):
                catalog.list_runs(root)
        except Exception as error:  # a failure in a thread would otherwise go unnoticed
            failures.append(error)

    threads = [threading.Thread(target=list_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with sqlite3.connect(root / catalog.INDEX_NAME) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        names = [name for (name,) in connection.execute("SELECT name FROM runs ORDER BY name")]
    connection.close()
    assert names == ["alpha", "sweep/beta", *(f"sweep/trial-{i}" for i in range(6))]


def test_get_run_of_an_unknown_name_suggests_close_matches(root):
    with pytest.raises(UnknownNameError, match=r"no run 'alpah'.*did you mean alpha\?"):
        catalog.get_run(root, "alpah")


def words(output: str) -> str:
    """CLI output with line wrapping undone (rich wraps at the 80 columns CliRunner has)."""
    return " ".join(output.split())


def test_cli_lists_runs_and_shows_one_with_its_config(root):
    listing = runner.invoke(app, ["runs", "--root", str(root)])
    assert listing.exit_code == 0, listing.output
    assert "alpha" in listing.output and "sweep/beta" in listing.output
    assert listing.output.count("completed") == 2 and " error" in listing.output
    filtered = runner.invoke(app, ["runs", "--root", str(root), "--task", "linear_regression"])
    assert "alpha" in filtered.output and "sweep/beta" not in filtered.output
    show = runner.invoke(app, ["runs", "show", "alpha", "--root", str(root)])
    assert show.exit_code == 0, show.output
    assert "  d_model: 32\n" in show.output and "  name: linear_regression\n" in show.output
    assert f"  {latest_evaluation(root / 'alpha').resolve()}\n" in show.output
    group_root = runner.invoke(app, ["runs", "--root", str(root), "show", "alpha"])
    assert group_root.exit_code == 0 and group_root.output == show.output


def test_cli_errors_are_one_clear_message(root, tmp_path):
    unknown = runner.invoke(app, ["runs", "show", "alpah", "--root", str(root)])
    assert unknown.exit_code == 2 and "did you mean alpha?" in words(unknown.output)
    bad_sort = runner.invoke(app, ["runs", "--root", str(root), "--sort", "speed"])
    assert bad_sort.exit_code == 2 and "cannot sort runs by 'speed'" in words(bad_sort.output)
    missing = runner.invoke(app, ["runs", "--root", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no runs directory" in words(missing.output)
    for result in (unknown, bad_sort, missing):
        assert "Traceback" not in result.output


def test_a_running_run_whose_process_died_is_listed_as_stopped(root):
    import socket
    import subprocess

    from iclab.run import RunDir

    trainer = subprocess.Popen(["sleep", "60"])  # stands in for a training process
    run = RunDir(root / "alpha")
    run.update_info(status="running", pid=trainer.pid, host=socket.gethostname())
    assert by_name(catalog.list_runs(root))["alpha"].status == "running"
    trainer.kill()  # killed, as by the OOM killer: no file of the run changes
    trainer.wait()
    assert by_name(catalog.list_runs(root))["alpha"].status == "stopped"
    run.update_info(host="another-machine")  # a process elsewhere cannot be checked
    assert by_name(catalog.list_runs(root))["alpha"].status == "running"
