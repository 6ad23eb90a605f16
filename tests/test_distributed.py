"""Data-parallel training with torchrun: 2 gloo processes on CPU train like one process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from iclab.config import ConfigError
from iclab.run import RunDir, train_run
from iclab.training.trainer import as_started_like, sample_batch, with_batch_shards
from saved_state import SavedState, assert_close, final_state

STEPS = 6


def sharded_config(**train):
    return tiny_config(
        train={"steps": STEPS, "batch_shards": 2, "checkpoint_every": 3, **train},
        model={"dropout": 0.0},
    )


def torchrun(config_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m iclab train ...`` with one thread per process."""
    command = [
        Path(sys.executable).parent / "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "iclab",
        "train",
        *([str(config_path)] if config_path else []),
        *arguments,
        "--no-progress",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# Two processes and one do not sum in the same order: gloo adds the two ranks' mean gradients
# of 8 rows, one process takes the mean of 16, so gradients differ by float32 rounding
# (~1e-7 relative) and AdamW's update m/√v carries that relative error through about
# unchanged. After 6 steps the weights and moments differ by at most ~1.5e-6 of each tensor's
# largest entry (measured); 1e-5 leaves room for other CPUs' kernels, while training on any
# other rows moves weights by ~lr = 3e-3 a step, i.e. ~5e-2 of their scale, far outside it.
RTOL = 1e-5


def logged_losses(run: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in RunDir(run).read_metrics()}


def without_key_biases(state: SavedState) -> SavedState:
    """The state with the key part of every attention's qkv bias zeroed. Its gradient is zero
    in exact arithmetic (q·b_k adds one constant to all of a query's scores, which softmax
    ignores), so what AdamW does with it is its rounding noise divided by the noise's own size
    (seen: entries of ~1e-6 that differ by 100% between process counts); no order of summation
    can make that agree, and it changes no prediction."""
    model = dict(state.model)
    for name, bias in state.model.items():
        if name.endswith("mixer.qkv.bias"):
            width = len(bias) // 3
            model[name] = torch.cat([bias[:width], torch.zeros(width), bias[2 * width :]])
    return replace(state, model=model)


def assert_same_training(first: Path, second: Path) -> None:
    """The same steps logged with the same losses, and the final weights and optimizer state
    the same, to the tolerance of another summation order."""
    losses, reference = logged_losses(first), logged_losses(second)
    assert list(losses) == list(reference) == list(range(1, STEPS + 1))
    for step in reference:
        assert losses[step] == pytest.approx(reference[step], rel=RTOL), step
    saved, expected = final_state(first), final_state(second)
    assert saved.step == STEPS
    assert_close(without_key_biases(saved), without_key_biases(expected), rtol=RTOL)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    config_path = root / "tiny.yaml"
    config_path.write_text(sharded_config().to_yaml())
    result = torchrun(config_path, "--out", str(root / "run"))
    return root, result


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    """The two-process run's config trained by one process: the reference for both."""
    run = tmp_path_factory.mktemp("one") / "run"
    train_run(sharded_config(), run, show_progress=False)
    return run


def test_two_processes_with_global_batch_b_match_one_process_with_batch_b(
    two_process_run, one_process_run
):
    root, _ = two_process_run
    assert_same_training(root / "run", one_process_run)


def test_two_processes_in_micro_batches_match_one_process_with_the_whole_batch(
    tmp_path, one_process_run
):
    """Each process runs its 8 rows in two parts of 4, and the gradients are averaged over
    the processes once, at the second part's backward (DistributedDataParallel.no_sync)."""
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(sharded_config(micro_batches=2).to_yaml())
    torchrun(config_path, "--out", str(tmp_path / "run"))
    assert_same_training(tmp_path / "run", one_process_run)


def test_only_rank_zero_writes_the_run_directory(two_process_run):
    root, result = two_process_run
    run = RunDir(root / "run")
    assert run.read_info()["status"] == "completed"
    assert run.read_info()["processes"] == 2
    assert len(run.read_metrics()) == STEPS  # one line per step, not one per process
    assert len(list(run.tensorboard_dir.iterdir())) == 1
    assert result.stdout.count("run directory:") == 1


def test_a_two_process_run_resumes_in_one_process_on_the_same_batches(
    two_process_run, one_process_run, tmp_path
):
    """Resume works for any number of processes dividing the shards: the 2-process run's step-3
    checkpoint, continued by one process, ends where one process trained throughout ends."""
    root, _ = two_process_run
    resumed = tmp_path / "resumed"
    run = RunDir(root / "run")
    for checkpoint in sorted(run.checkpoints.iterdir()):
        if checkpoint.name.endswith(f"{STEPS:07d}"):
            continue
        target = resumed / "checkpoints" / checkpoint.name
        target.mkdir(parents=True)
        for file in checkpoint.iterdir():
            (target / file.name).write_bytes(file.read_bytes())
    (resumed / "config.yaml").write_text(run.config_path.read_text())
    (resumed / "metrics.jsonl").write_text(run.metrics_path.read_text())
    train_run(RunDir(resumed).load_config(), resumed, resume=True, show_progress=False)
    assert_same_training(resumed, one_process_run)


def test_the_batch_must_divide_among_the_processes():
    with pytest.raises(ConfigError, match=r"batch_size \(16\) must be a multiple .* \(3\)"):
        with_batch_shards(sharded_config(), 3)
    assert with_batch_shards(tiny_config(), 2).train.batch_shards == 2  # default: processes
    assert with_batch_shards(sharded_config(), 4).train.batch_shards == 2  # kept on resume


def test_a_run_started_on_two_processes_at_precision_auto_is_the_same_configs_run():
    """What training fixes when it starts (shards left to the process count, precision auto)
    is read from the started run; what the config itself sets must still match it."""
    started = tiny_config(train={"batch_shards": 2, "precision": "bfloat16"})
    wanted = tiny_config(train={"precision": "auto"})
    assert as_started_like(wanted, started).digest() == started.digest()
    for pinned in ({"batch_shards": 1, "precision": "auto"}, {"precision": "float32"}):
        assert as_started_like(tiny_config(train=pinned), started).digest() != started.digest()


@pytest.mark.parametrize(("shards", "world"), [(1, 2), (2, 4), (4, 2), (8, 8)])
def test_every_process_count_dividing_the_batch_draws_its_rows_of_the_same_batch(shards, world):
    from iclab.training.distributed import Processes
    from iclab.training.schedule import curriculum_at

    config = with_batch_shards(sharded_config(batch_shards=shards, batch_size=16), 1)
    task, stage, cpu = config.task.build(), curriculum_at(config, 2), torch.device("cpu")
    batch = sample_batch(task, config.train, 2, stage, Processes(), cpu)
    rows = 16 // world
    for rank in range(world):
        part = sample_batch(task, config.train, 2, stage, Processes(rank, world, 0), cpu)
        assert part.inputs.equal(batch.inputs[rank * rows : (rank + 1) * rows])
        assert part.meta["w"].equal(batch.meta["w"][rank * rows : (rank + 1) * rows])


def test_a_one_process_run_resumes_on_two_processes_on_the_same_batches(tmp_path):
    config = tiny_config(train={"steps": 3, "checkpoint_every": 3})
    train_run(config, tmp_path / "run", show_progress=False)  # batch_shards = 1
    longer = tiny_config(train={"steps": STEPS, "checkpoint_every": 3, "batch_shards": 1})
    (tmp_path / "run" / "config.yaml").write_text(longer.to_yaml())
    torchrun(None, "--resume", str(tmp_path / "run"))
    train_run(longer, tmp_path / "whole", show_progress=False)
    assert_same_training(tmp_path / "run", tmp_path / "whole")
