"""Fault injection: what a careless user or a flaky machine does to a run, and what must hold.

A diverged run is never a success; a torn log line, a full disk, a second writer or a kill -9
in the middle of a checkpoint never bricks a run. (Kill -9 during training:
tests/test_training.py; damaged checkpoints and metas: tests/test_checkpoint.py; hostile
configs: tests/test_config.py and tests/test_config_fuzz.py.)
"""

from __future__ import annotations

import errno
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import tiny_config
from iclab.cli import app
from iclab.errors import ConfigError, DiskFullError, DivergedError, RunBusyError
from iclab.run import RunDir, catalog, evaluate_run, train_run
from iclab.training.checkpoint import latest_valid_checkpoint, sha256

runner = CliRunner()
KILL_LOOP = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_loop.py"


def strict_json_lines(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, refusing NaN and Infinity (not JSON)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which strict JSON does not allow")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# --- divergence --------------------------------------------------------------------------------


def test_a_diverging_run_stops_as_diverged_and_keeps_its_finite_checkpoints(tmp_path):
    """lr = 1e9 after 10 good steps at 3e-3 (a resume with a new rate): the loss leaves the
    finite numbers, the run stops within the patience, and what is kept is finite."""
    run_dir = tmp_path / "run"
    train_run(tiny_config(train={"steps": 10}), run_dir, show_progress=False)
    wild = tiny_config(train={"steps": 60, "lr": 1e9, "divergence_patience": 2})
    with pytest.warns(UserWarning, match="learning rate"), pytest.raises(DivergedError) as caught:
        train_run(wild, run_dir, resume=True, show_progress=False)
    message = str(caught.value)
    assert "diverged" in message and "train.lr" in message and "step-0000010" in message
    info = RunDir(run_dir).read_info()
    assert info["status"] == "diverged"
    assert 10 < info["diverged_at"] < 60 and info["last_finite_checkpoint"] == "step-0000010"
    kept = latest_valid_checkpoint(RunDir(run_dir).checkpoints)
    assert kept.step == 10
    assert all(t.isfinite().all() for t in load_file(str(kept.path / "model.safetensors")).values())
    rows = strict_json_lines(RunDir(run_dir).metrics_path)
    assert any(row["loss"] is None for row in rows)  # the non-finite steps, as null
    assert [row for row in RunDir(run_dir).read_metrics() if math.isnan(row["loss"])]


def test_with_patience_a_few_non_finite_steps_are_skipped_without_an_update(tmp_path, monkeypatch):
    """Two poisoned batches in a row with patience 2: skipped (the weights do not move), and
    the run completes; a third in a row would have stopped it."""
    from iclab.training import trainer as trainer_module

    sample = trainer_module.sample_batch
    poisoned = {5, 6}

    def sometimes_nan(task, train, step, *rest):
        episode = sample(task, train, step, *rest)
        if step in poisoned:
            episode.targets[0, 0] = torch.nan
        return episode

    monkeypatch.setattr(trainer_module, "sample_batch", sometimes_nan)
    config = tiny_config(train={"steps": 12, "divergence_patience": 2})
    trainer = train_run(config, tmp_path / "run", show_progress=False)
    assert trainer.step == 12 and RunDir(tmp_path / "run").read_info()["status"] == "completed"
    poisoned.update({7})
    with pytest.raises(DivergedError, match="3 steps in a row, up to step 8"):
        train_run(config, tmp_path / "again", show_progress=False)


def test_infinite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """A finite step to infinite weights (the effect of lr = inf): the run stops at the
    checkpoint that would have saved them, which is not written."""
    from iclab.training.trainer import Trainer

    step = Trainer.train_step

    def breaking_step(self, number):
        result = step(self, number)
        if number == 14:
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.inf)
        return result

    monkeypatch.setattr(Trainer, "train_step", breaking_step)
    config = tiny_config(train={"divergence_patience": 100})  # the NaN losses are skipped
    with pytest.raises(DivergedError, match="weights are not finite at step 20"):
        train_run(config, tmp_path / "run", show_progress=False)
    names = [path.name for path in RunDir(tmp_path / "run").checkpoints.glob("step-*")]
    assert names == ["step-0000010"]


def test_the_cli_says_diverged_in_one_line_and_exits_non_zero(tmp_path):
    config_path = tmp_path / "wild.yaml"
    config_path.write_text(tiny_config(train={"lr": 1e12, "divergence_patience": 0}).to_yaml())
    result = runner.invoke(app, ["train", str(config_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "diverged" in result.output
    assert "Traceback" not in result.output
    listing = runner.invoke(app, ["runs", "--root", str(tmp_path)])
    assert "diverged" in listing.output


def test_a_nan_model_is_scored_as_wrong_and_its_headline_is_its_own(tmp_path):
    """A model whose weights are NaN: evaluation writes its rows (infinite error), and the
    run's headline is that error, never the first yardstick's value."""
    run_dir = tmp_path / "run"
    train_run(tiny_config(train={"steps": 10}), run_dir, show_progress=False)
    newest = latest_valid_checkpoint(RunDir(run_dir).checkpoints).path / "model.safetensors"

    weights = load_file(str(newest))
    save_file({name: torch.full_like(t, math.nan) for name, t in weights.items()}, str(newest))
    meta_path = newest.parent / "meta.json"  # keep the checksum of the replaced file right
    meta = json.loads(meta_path.read_text())
    meta["sha256"]["model.safetensors"] = sha256(newest)
    meta_path.write_text(json.dumps(meta))
    evaluation = evaluate_run(run_dir)
    model_rows = [p for p in evaluation.curves if p.learner == "model"]
    assert model_rows and all(p.mean == math.inf for p in model_rows)
    entry = catalog.list_runs(tmp_path)[0]
    assert entry.headline == math.inf


# --- torn logs, full disks, two writers ----------------------------------------------------------


def test_a_torn_last_metrics_line_is_reported_left_out_and_truncated_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    train_run(tiny_config(train={"steps": 10}), run_dir, show_progress=False)
    run = RunDir(run_dir)
    with run.metrics_path.open("a") as handle:
        handle.write('{"step": 11, "loss": 0.5, "lr": 0.00')  # a write cut short
    with pytest.warns(UserWarning, match=r"metrics.jsonl, line 11 is torn"):
        assert [row["step"] for row in run.read_metrics()] == list(range(1, 11))
    with pytest.warns(UserWarning, match="torn"):
        evaluate_run(run_dir)
    with pytest.warns(UserWarning, match="torn"):
        train_run(tiny_config(train={"steps": 20}), run_dir, resume=True, show_progress=False)
    assert [row["step"] for row in strict_json_lines(run.metrics_path)] == list(range(1, 21))


def test_a_damaged_line_inside_the_log_is_an_error_naming_file_and_line(tmp_path):
    run_dir = tmp_path / "run"
    train_run(tiny_config(train={"steps": 5}), run_dir, show_progress=False)
    run = RunDir(run_dir)
    lines = run.metrics_path.read_text().splitlines()
    lines[2] = lines[2][:10]
    run.metrics_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match=r"cannot read .*metrics.jsonl, line 3"):
        run.read_metrics()


def test_a_full_disk_gives_one_clear_message_and_the_run_resumes(tmp_path, monkeypatch):
    """The disk fills at the second checkpoint: one message naming what to do; once there is
    space, the resume ends where an undisturbed run ends."""
    from iclab.run import log as log_module

    run_dir = tmp_path / "run"
    config = tiny_config(train={"steps": 30})
    save = log_module.TrainingLog.checkpoint

    def filling(self, step):
        if step == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "checkpoints"))
        save(self, step)

    monkeypatch.setattr(log_module.TrainingLog, "checkpoint", filling)
    with pytest.raises(DiskFullError) as caught:
        train_run(config, run_dir, show_progress=False)
    message = str(caught.value)
    assert "no space left" in message and "--resume" in message and "step-0000010" in message
    assert RunDir(run_dir).read_info()["status"] == "interrupted"
    monkeypatch.setattr(log_module.TrainingLog, "checkpoint", save)
    train_run(config, run_dir, resume=True, show_progress=False)
    train_run(config, tmp_path / "straight", show_progress=False)
    resumed = [row["loss"] for row in RunDir(run_dir).read_metrics()]
    straight = [row["loss"] for row in RunDir(tmp_path / "straight").read_metrics()]
    assert resumed == straight


def hold_the_lock(run_dir: str, ready, release) -> None:
    with RunDir(Path(run_dir)).writer_lock():
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_at_once_and_readers_keep_working(tmp_path):
    run_dir = tmp_path / "run"
    train_run(tiny_config(train={"steps": 10}), run_dir, show_progress=False)
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=hold_the_lock, args=(str(run_dir), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        before = RunDir(run_dir).metrics_path.read_text()
        with pytest.raises(RunBusyError, match=rf"being trained by process {holder.pid} on"):
            train_run(tiny_config(train={"steps": 20}), run_dir, resume=True, show_progress=False)
        with pytest.raises(RunBusyError):
            train_run(tiny_config(), run_dir, show_progress=False)
        assert RunDir(run_dir).metrics_path.read_text() == before
        assert evaluate_run(run_dir).directory is not None  # reading is never locked
        assert [entry.name for entry in catalog.list_runs(tmp_path)] == ["run"]
    finally:
        release.set()
        holder.join(30)
    train_run(tiny_config(train={"steps": 20}), run_dir, resume=True, show_progress=False)
    assert RunDir(run_dir).read_info()["steps"] == 20


def test_a_killed_holder_leaves_no_lock_in_the_way(tmp_path):
    run_dir = tmp_path / "run"
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=hold_the_lock, args=(str(run_dir), ready, release))
    holder.start()
    assert ready.wait(60)
    holder.kill()
    holder.join(30)
    assert json.loads((run_dir / ".lock").read_text())["pid"] == holder.pid  # stale, not held
    train_run(tiny_config(train={"steps": 3}), run_dir, show_progress=False)
    assert RunDir(run_dir).read_info()["status"] == "completed"


def test_a_training_that_fails_its_checks_leaves_no_directory(tmp_path, monkeypatch):
    """The lock is taken before the checks, in a directory it creates; a check that fails
    (here the model cannot be built) leaves no directory behind."""
    from iclab.training import trainer as trainer_module

    def unbuildable(*args, **kwargs):
        raise ConfigError("model: cannot be built")

    monkeypatch.setattr(trainer_module, "build_model", unbuildable)
    with pytest.raises(ConfigError, match="cannot be built"):
        train_run(tiny_config(), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_path_that_looks_like_rich_markup_is_printed_as_written(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(tiny_config(train={"steps": 4}).to_yaml())
    run_dir = tmp_path / "a[" / "]b"  # "a[/]b": rich's closing tag, if read as markup
    results = [
        runner.invoke(app, ["train", str(config_path), "--out", str(run_dir), "--no-progress"]),
        runner.invoke(app, ["train", "--resume", str(run_dir), "--set", "train.steps=6"]),
        runner.invoke(app, ["eval", str(run_dir), "--n-prompts", "8"]),
        runner.invoke(app, ["report", str(run_dir)]),
        runner.invoke(app, ["runs", "--root", str(tmp_path / "a["), "show", "]b"]),
    ]
    for result in results:
        assert result.exit_code == 0, result.output
    assert f"resuming {run_dir} from step 4" in results[1].output.replace("\n", "")


def test_a_process_killed_while_writing_a_checkpoint_resumes_bitwise():
    """benchmarks/kill_loop.py (20 trials in RESULTS.md), one trial: `iclab train` is stopped
    with its checkpoint's first tensor file in the staging directory and killed with SIGKILL;
    the resume ends bitwise where an uninterrupted run ends, and no staging is left."""
    command = [sys.executable, str(KILL_LOOP), "--trials", "1", "--modes", "checkpoint"]
    result = subprocess.run(
        [*command, "--steps", "60"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\(checkpoint, killed after \d+ logged steps\): bitwise equal", result.stdout)
    assert "1/1 resumed runs bitwise equal" in result.stdout
