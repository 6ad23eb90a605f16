"""The fast path's switches, on CPU: bf16 autocast, torch.compile, and checkpoints that stay
portable between compiled and plain models."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from conftest import tiny_config
from iclab.devices import keep_freed_memory
from iclab.run import RunDir, load_trained_model, train_run
from iclab.training import trainer as trainer_module
from iclab.training.checkpoint import MODEL_FILE, latest_valid_checkpoint
from iclab.training.schedule import curriculum_at


def losses(run) -> list[float]:
    return [row["loss"] for row in RunDir(run).read_metrics()]


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with the eager backend: the same OptimizedModule wrapper (and its
    ``_orig_mod.`` parameter names) without minutes of inductor compilation on CPU."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))


def test_bfloat16_autocast_changes_the_arithmetic_not_the_run(tmp_path):
    train_run(tiny_config(train={"steps": 5}), tmp_path / "fp32", show_progress=False)
    bf16 = tiny_config(train={"steps": 5, "precision": "bfloat16"})
    train_run(bf16, tmp_path / "bf16", show_progress=False)
    full, half = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert full != half  # autocast ran the matmuls in bfloat16 ...
    assert half == pytest.approx(full, rel=0.05)  # ... on the same batches, to bf16 accuracy
    info = RunDir(tmp_path / "bf16").read_info()
    assert info["precision"] == "bfloat16" and info["device"] == "cpu"
    assert info["steps_per_second"] > 0 and info["tokens_per_second"] > 0
    model = load_trained_model(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights


def test_a_compiled_run_checkpoints_plain_parameter_names(tmp_path, eager_compile):
    config = tiny_config(train={"steps": 4, "compile": True, "checkpoint_every": 2})
    trainer = train_run(config, tmp_path / "run", show_progress=False)
    assert type(trainer.network).__name__ == "OptimizedModule"
    checkpoint = latest_valid_checkpoint(RunDir(tmp_path / "run").checkpoints)
    with safe_open(checkpoint.path / MODEL_FILE, "pt") as tensors:
        names = set(tensors.keys())
    assert names == set(trainer.model.state_dict())
    assert not any("_orig_mod" in name or name.startswith("module.") for name in names)


def test_checkpoints_move_between_compiled_and_plain_training(tmp_path, eager_compile):
    """Compiled → plain → compiled resumes land where a plain run lands."""
    plain = tiny_config(train={"steps": 6, "checkpoint_every": 2})
    train_run(plain, tmp_path / "plain", show_progress=False)
    compiled = tiny_config(train={"steps": 2, "checkpoint_every": 2, "compile": True})
    run = tmp_path / "mixed"
    train_run(compiled, run, show_progress=False)
    train_run(tiny_config(train={"steps": 4, "checkpoint_every": 2}), run, resume=True)
    again = tiny_config(train={"steps": 6, "checkpoint_every": 2, "compile": True})
    train_run(again, run, resume=True, show_progress=False)
    assert losses(run) == pytest.approx(losses(tmp_path / "plain"), rel=1e-5)
    prompts = plain.task.build().sample(4, 8, torch.Generator().manual_seed(0))
    mixed_model = load_trained_model(run)  # a plain model reads the compiled run's checkpoint
    plain_model = load_trained_model(tmp_path / "plain")
    assert torch.allclose(mixed_model.predict(prompts), plain_model.predict(prompts), atol=1e-5)


PAGE_FAULTS_PER_STEP = """
import resource, sys
import torch
import iclab.training.trainer as trainer_module
from iclab.config import load_config

torch.set_num_threads(1)
if sys.argv[1] == "glibc-default":
    trainer_module.keep_freed_memory = lambda: False
config = load_config("quickstart", ["train.curriculum.dims=null", "train.curriculum.points=null"])
trainer = trainer_module.Trainer(config)
for step in range(6):
    trainer.train_step(step)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(6, 11):
    trainer.train_step(step)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def page_faults_per_step(allocator: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", PAGE_FAULTS_PER_STEP, allocator],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
    )
    return float(result.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc: Linux only")
def test_training_on_cpu_keeps_freed_activations_mapped():
    """A step's freed activations are reused by the next step, not unmapped and faulted in
    again: the quickstart's full-size steps take a page fault per 4 KB glibc hands back."""
    default, kept = page_faults_per_step("glibc-default"), page_faults_per_step("kept")
    assert default > 1000  # the cost the setting removes is there to remove
    assert kept < default / 10


def test_settings_the_user_gave_glibc_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert keep_freed_memory() is False


RELEASE = """
import torch
from iclab.devices import keep_freed_memory, release_freed_memory

def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

keep_freed_memory()
blocks = [torch.ones(2**20) for _ in range(16)]  # 64 MB in 4 MB blocks, kept in the heap
del blocks
before = resident_mb()
released = release_freed_memory()
print(released, before - resident_mb())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc: Linux only")
def test_released_memory_leaves_the_process():
    """What ``keep_freed_memory`` keeps, ``release_freed_memory`` hands back (64 MB here)."""
    result = subprocess.run(
        [sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True
    )
    released, dropped = result.stdout.split()
    assert released == "True" and float(dropped) > 48


def test_training_releases_kept_memory_when_the_step_changes_size_and_at_checkpoints(
    tmp_path, monkeypatch
):
    calls = []
    monkeypatch.setattr(trainer_module, "release_freed_memory", lambda: calls.append(1))
    curriculum = {
        "dims": {"start": 2, "end": 3, "increment": 1, "interval": 5},
        "points": {"start": 4, "end": 8, "increment": 2, "interval": 5},
    }
    config = tiny_config(train={"steps": 20, "checkpoint_every": 10, "curriculum": curriculum})
    train_run(config, tmp_path / "run", show_progress=False)

    def shape(step):
        stage = curriculum_at(config, step)
        return stage.n_dims_active, stage.n_points

    changes = sum(shape(step) != shape(step - 1) for step in range(1, 20))
    assert changes >= 2  # the curriculum moves
    assert len(calls) == changes + 2  # and the two checkpoints
