"""Training: loss goes down, and a resumed run is bitwise the uninterrupted one (losses, weights,
optimizer state and random state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import model_for, tiny_config
from iclab.config import build_config
from iclab.devices import describe_peak_memory
from iclab.optim import adamw
from iclab.run import RunDir, train_run
from iclab.training import trainer as trainer_module
from iclab.training.checkpoint import list_checkpoints
from iclab.training.schedule import curriculum_at, learning_rate
from saved_state import assert_bitwise_equal, final_state, unequal_tensors


class Crash(Exception):
    pass


def losses(run_dir) -> list[tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in RunDir(run_dir).read_metrics()]


def crash_at(step_to_crash: int):
    def on_step(step: int, loss: float) -> None:
        if step == step_to_crash:
            raise Crash

    return on_step


def test_a_short_training_run_lowers_the_loss(tmp_path):
    """d = 1 is learnable in context within a few hundred steps (seen: 1.05 → 0.55)."""
    config = tiny_config(
        task={"n_dims": 1}, train={"steps": 400, "batch_size": 32, "checkpoint_every": 400}
    )
    train_run(config, tmp_path / "run", show_progress=False)
    history = [loss for _, loss in losses(tmp_path / "run")]
    first, last = sum(history[:50]) / 50, sum(history[-50:]) / 50
    assert last < 0.75 * first


def test_run_directory_has_the_documented_layout(tmp_path, config):
    train_run(config, tmp_path / "run", show_progress=False)
    run = RunDir(tmp_path / "run")
    assert config.train.batch_shards is None
    resolved = build_config(config.to_dict(), ["train.batch_shards=1"])  # one process started it
    assert run.load_config() == resolved
    assert run.read_info()["status"] == "completed"
    assert run.read_info()["config_hash"] == resolved.digest()
    assert [c.step for c in list_checkpoints(run.checkpoints)] == [20, 30]
    assert any(run.tensorboard_dir.iterdir())
    assert [row["step"] for row in run.read_metrics()] == list(range(1, 31))


# Dropout draws from the global torch generator, which only the checkpoint's "rng" carries
# across a crash: without dropout a resume that forgot it would still match.
DROPOUTS = {
    "no dropout": {},
    "residual dropout": {"dropout": 0.1},
    "attention dropout": {"mixer": "softmax(dropout=0.1)"},
}


def crash_and_resume(config, run_dir) -> None:
    """Train until step 25 (checkpoint at 20; steps 21-25 are lost), then resume to the end."""
    with pytest.raises(Crash):
        train_run(config, run_dir, show_progress=False, on_step=crash_at(25))
    assert [s for s, _ in losses(run_dir)][-1] == 25  # steps 21-25 were logged
    assert [c.step for c in list_checkpoints(RunDir(run_dir).checkpoints)] == [10, 20]
    train_run(config, run_dir, resume=True, show_progress=False)


@pytest.mark.parametrize("model", DROPOUTS.values(), ids=DROPOUTS.keys())
def test_resumed_run_matches_uninterrupted_run_bitwise(tmp_path, model):
    """The same losses, and the final checkpoint the same bytes: every weight, every optimizer
    moment and step counter, and the random state saved with it."""
    config = tiny_config(model=model)
    train_run(config, tmp_path / "straight", show_progress=False)
    crash_and_resume(config, tmp_path / "crashed")
    resumed, straight = final_state(tmp_path / "crashed"), final_state(tmp_path / "straight")
    assert resumed.step == 30
    assert_bitwise_equal(resumed, straight)
    assert losses(tmp_path / "crashed") == losses(tmp_path / "straight")


@pytest.mark.parametrize("model", list(DROPOUTS.values())[1:], ids=list(DROPOUTS)[1:])
def test_with_dropout_a_resume_that_forgot_the_random_state_would_differ(
    tmp_path, model, monkeypatch
):
    """The power of the test above: with the restore of the random state left out, dropout
    draws other masks after the resume and the weights, random state and losses differ."""
    config = tiny_config(model=model)
    train_run(config, tmp_path / "straight", show_progress=False)
    monkeypatch.setattr(trainer_module, "restore_rng_state", lambda states: None)
    crash_and_resume(config, tmp_path / "crashed")
    resumed, straight = final_state(tmp_path / "crashed"), final_state(tmp_path / "straight")
    assert unequal_tensors(resumed.model, straight.model) != []
    assert resumed.rng != straight.rng
    assert losses(tmp_path / "crashed")[:20] == losses(tmp_path / "straight")[:20]
    assert losses(tmp_path / "crashed")[20] != losses(tmp_path / "straight")[20]


def test_resume_skips_a_corrupted_checkpoint_and_stays_bitwise(tmp_path, config):
    config = tiny_config(train={"keep_checkpoints": 3})
    train_run(config, tmp_path / "straight", show_progress=False)
    with pytest.raises(Crash):
        train_run(config, tmp_path / "crashed", show_progress=False, on_step=crash_at(25))
    newest = list_checkpoints(RunDir(tmp_path / "crashed").checkpoints)[-1]
    assert newest.step == 20
    (newest.path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.warns(UserWarning, match="skipping checkpoint step-0000020"):
        trainer = train_run(config, tmp_path / "crashed", resume=True, show_progress=False)
    assert trainer.step == 30
    assert losses(tmp_path / "crashed") == losses(tmp_path / "straight")
    assert_bitwise_equal(final_state(tmp_path / "crashed"), final_state(tmp_path / "straight"))


def test_training_into_an_existing_run_requires_resume(tmp_path, config):
    train_run(config, tmp_path / "run", show_progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_run(config, tmp_path / "run", show_progress=False)


def test_a_killed_process_resumes_to_the_same_losses(tmp_path, config):
    """SIGKILL a real `iclab train` process after its first checkpoint, then resume it."""
    config = tiny_config(train={"steps": 400, "checkpoint_every": 50, "keep_checkpoints": 10})
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(config.to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "iclab", "train", str(config_path), "--no-progress"]
    subprocess.run([*command, "--out", str(tmp_path / "straight")], check=True, env=env)
    process = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], env=env)
    checkpoints = RunDir(tmp_path / "killed").checkpoints
    deadline = time.monotonic() + 120
    while not list_checkpoints(checkpoints) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    subprocess.run(
        [
            sys.executable,
            "-m",
            "iclab",
            "train",
            "--resume",
            str(tmp_path / "killed"),
            "--no-progress",
        ],
        check=True,
        env=env,
    )
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
    assert_bitwise_equal(final_state(tmp_path / "killed"), final_state(tmp_path / "straight"))


MICRO_BATCH_CASES = {
    "every position": {},
    "the last position": {"train": {"loss_on": "last"}},
    "a loss mask of its own per prompt": {  # icll trains on the symbols, not the separators
        "task": {"name": "icll", "n_points": 48},
        "eval": {"algorithms": []},
    },
}


@pytest.mark.parametrize("sections", MICRO_BATCH_CASES.values(), ids=MICRO_BATCH_CASES)
def test_micro_batches_make_the_whole_batchs_update(sections):
    """A batch of 16 prompts in three parts (5, 5 and 6 prompts), each part's loss weighted by
    its share of the positions trained on: the network sees the parts, and the losses and
    weights are the whole batch's, to float32 rounding (another summation order)."""
    whole = trainer_module.Trainer(tiny_config(**sections))
    train = {**sections.get("train", {}), "micro_batches": 3}
    parts = trainer_module.Trainer(tiny_config(**{**sections, "train": train}))
    seen, forward = [], parts.network.forward
    parts.network.forward = lambda episode: seen.append(episode.batch_size) or forward(episode)
    for step in range(3):
        whole_loss, _ = whole.train_step(step)
        parts_loss, _ = parts.train_step(step)
        assert parts_loss.item() == pytest.approx(whole_loss.item(), rel=1e-5)
    assert seen == [5, 5, 6] * 3
    expected = dict(whole.model.named_parameters())
    for name, parameter in parts.model.named_parameters():
        if name.endswith("mixer.qkv.bias"):  # the key third: its gradient is rounding noise
            width = len(parameter) // 3  # (test_distributed.without_key_biases says why)
            keep = torch.cat([torch.arange(width), torch.arange(2 * width, 3 * width)])
            parameter, expected[name] = parameter[keep], expected[name][keep]
        torch.testing.assert_close(parameter, expected[name], rtol=1e-4, atol=1e-6)


def test_micro_batches_cannot_outnumber_the_prompts():
    with pytest.raises(ValueError, match=r"train.micro_batches \(32\) .* at most train.batch_size"):
        tiny_config(train={"micro_batches": 32})


def test_learning_rate_warms_up_then_follows_the_schedule():
    train = tiny_config(train={"warmup_steps": 10, "schedule": "cosine", "steps": 110}).train
    assert learning_rate(train, 0) == pytest.approx(train.lr / 10)
    assert learning_rate(train, 9) == pytest.approx(train.lr)
    assert learning_rate(train, 10) == pytest.approx(train.lr)
    assert learning_rate(train, 110) == pytest.approx(train.min_lr_ratio * train.lr)


def test_curriculum_grows_in_steps_and_stops_at_the_end():
    config = tiny_config(
        task={"n_dims": 6, "n_points": 12},
        train={
            "curriculum": {
                "dims": {"start": 2, "end": 6, "increment": 1, "interval": 100},
                "points": {"start": 4, "end": 12, "increment": 3, "interval": 50},
            }
        },
    )
    assert curriculum_at(config, 0).n_dims_active == 2 and curriculum_at(config, 0).n_points == 4
    assert curriculum_at(config, 199).n_dims_active == 3
    assert curriculum_at(config, 100).n_points == 10
    assert curriculum_at(config, 10_000).n_dims_active == 6
    assert curriculum_at(config, 10_000).n_points == 12


def test_the_width_chosen_for_a_parameter_budget_is_printed_and_recorded(tmp_path):
    from io import StringIO

    from rich.console import Console

    config = tiny_config(
        model={"mixer": "gru", "n_layers": 2, "target_params": 20_000}, train={"steps": 2}
    )
    output = StringIO()
    train_run(config, tmp_path / "run", show_progress=False, console=Console(file=output))
    info = RunDir(tmp_path / "run").read_info()
    assert abs(info["n_params"] - 20_000) <= 1_000
    assert f"d_model={info['d_model']}" in output.getvalue()
    assert "fitted to 20,000" in output.getvalue()


def test_weight_decay_spares_biases_norms_and_mambas_dynamics():
    from iclab.config import ModelConfig, TaskConfig
    from iclab.training.trainer import parameter_groups

    model = model_for(
        ModelConfig(layers="mamba, softmax", d_model=16, n_heads=2), TaskConfig(n_dims=3)
    )
    decayed, spared = parameter_groups(model, 0.1)
    names = {id(p): name for name, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    spared_names = {names[id(p)] for p in spared["params"]}
    assert (decayed["weight_decay"], spared["weight_decay"]) == (0.1, 0.0)
    assert decayed_names | spared_names == set(names.values())
    assert "backbone.blocks.0.mixer.in_proj.weight" in decayed_names
    assert "backbone.blocks.1.mixer.qkv.weight" in decayed_names
    assert {"backbone.blocks.0.mixer.A_log", "backbone.blocks.0.mixer.skip"} <= spared_names
    assert "backbone.blocks.1.ln_mixer.weight" in spared_names
    assert "backbone.blocks.1.mixer.qkv.bias" in spared_names
    assert len(parameter_groups(model, 0.0)) == 1


def test_a_run_that_fails_says_so_in_run_json_and_the_index(tmp_path, monkeypatch):
    from iclab.run import catalog
    from iclab.training.trainer import Trainer

    original = Trainer.train_step

    def failing_step(self, step):
        if step == 3:
            raise RuntimeError("diverged")
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", failing_step)
    with pytest.raises(RuntimeError, match="diverged"):
        train_run(tiny_config(), tmp_path / "run", show_progress=False)
    assert RunDir(tmp_path / "run").read_info()["status"] == "failed"
    [entry] = catalog.list_runs(tmp_path)
    assert (entry.name, entry.status, entry.steps) == ("run", "failed", 3)


def test_run_json_keeps_when_training_first_started_across_a_resume(tmp_path):
    from datetime import datetime

    from iclab.run import catalog

    train_run(tiny_config(train={"steps": 10}), tmp_path / "run", show_progress=False)
    created = RunDir(tmp_path / "run").read_info()["created"]
    longer = tiny_config(train={"steps": 20})
    train_run(longer, tmp_path / "run", resume=True, show_progress=False)
    assert RunDir(tmp_path / "run").read_info()["created"] == created
    [entry] = catalog.list_runs(tmp_path)
    assert entry.created == datetime.fromisoformat(created) and entry.steps == 20


def test_run_json_names_the_source_commit_and_the_cpu(tmp_path):
    """Numbers move between commits of one version and timings between machines: run.json
    says which (the tests run from a git checkout, as an editable install does)."""
    from pathlib import Path

    from iclab import __version__
    from iclab.run.directory import VECTOR_UNITS

    train_run(tiny_config(train={"steps": 2}), tmp_path / "run", show_progress=False)
    recorded = RunDir(tmp_path / "run").read_info()["environment"]
    root = Path(__file__).parents[1]
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert recorded["iclab"] == __version__ and recorded["source"].startswith(head)
    if Path("/proc/cpuinfo").exists():
        cores = f"({len(os.sched_getaffinity(0))} cores"
        assert recorded["cpu"].endswith(")") and cores in recorded["cpu"]
        flags = Path("/proc/cpuinfo").read_text().split()
        for flag, unit in VECTOR_UNITS:  # the widest unit the CPU has, named once
            if flag in flags:
                assert recorded["cpu"].endswith(f"{cores}, {unit})")
                break


def test_run_json_records_the_peak_memory_in_megabytes(tmp_path):
    """The process's peak resident memory: at least what it was before training (peaks only
    grow), at most what it is now, so a unit off by 1024 cannot pass."""
    import resource

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    before = peak_mb()
    train_run(tiny_config(train={"steps": 3}), tmp_path / "run", show_progress=False)
    recorded = RunDir(tmp_path / "run").read_info()["peak_rss_mb"]
    assert before - 0.1 <= recorded <= peak_mb() + 0.1  # rounded to 0.1 MB
    assert "peak_gpu_memory_mb" not in RunDir(tmp_path / "run").read_info()  # a CPU run


def test_peak_memory_in_words():
    assert describe_peak_memory({"peak_rss_mb": 396.4}) == "peak memory 396 MB"
    both = {"peak_rss_mb": 2101.0, "peak_gpu_memory_mb": 10240.2}
    assert describe_peak_memory(both) == "peak memory 2,101 MB, GPU 10,240 MB"
    assert describe_peak_memory({}) == ""


def test_adamw_is_fused_where_torch_has_the_kernel_and_foreach_elsewhere(monkeypatch):
    import torch

    groups = [{"params": [torch.nn.Parameter(torch.ones(3))]}]
    assert adamw(groups, lr=1e-3).defaults["fused"]  # CPU, torch >= 2.4
    real = torch.optim.AdamW.__init__

    def without_fused_kernel(self, params, fused=None, **options):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point")
        real(self, params, fused=fused, **options)

    monkeypatch.setattr(torch.optim.AdamW, "__init__", without_fused_kernel)
    optimizer = adamw(groups, lr=1e-3)
    assert optimizer.defaults["foreach"] and not optimizer.param_groups[0]["fused"]
    assert "fused" not in groups[0]  # the caller's groups are left as they were


OPTIMIZERS_AGAINST_TORCH = """
import json, sys, torch
from iclab.optim import Adam, adamw

def trained(make, steps=3):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    groups = [{"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},
              {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}]
    optimizer = make(groups)
    for step in range(steps):
        inputs = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
        model(inputs).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    state = optimizer.state_dict()
    optimizer.load_state_dict(state)
    return [p.detach() for p in model.parameters()], state

options = {"lr": 1e-2, "betas": (0.9, 0.95)}
ours = {
    "adamw": trained(lambda groups: adamw(groups, **options)),
    "adam": trained(lambda groups: Adam(groups, **options)),
}
imported = "torch._dynamo" in sys.modules  # before torch's own optimizers import it
theirs = {
    "adamw": trained(lambda groups: torch.optim.AdamW(groups, **options, fused=True)),
    "adam": trained(lambda groups: torch.optim.Adam(groups, **options)),
}
same = {}
for name, (weights, state) in ours.items():
    their_weights, their_state = theirs[name]
    same[name] = [
        all(torch.equal(a, b) for a, b in zip(weights, their_weights)),
        all(torch.equal(state["state"][i][key], their_state["state"][i][key])
            for i in their_state["state"] for key in their_state["state"][i]),
        state["param_groups"] == their_state["param_groups"],
    ]
print(json.dumps({"dynamo_imported": imported, "same": same}))
"""


def test_optimizers_are_torchs_without_importing_dynamo():
    """iclab's Adam and AdamW skip the wrappers that import torch._dynamo (70 MB of a small
    run's peak memory); weights, state and state dict are torch's, bit for bit."""
    result = subprocess.run(
        [sys.executable, "-c", OPTIMIZERS_AGAINST_TORCH],
        capture_output=True,
        text=True,
        check=True,
    )
    same = [True, True, True]  # weights, state, param groups
    assert json.loads(result.stdout) == {
        "dynamo_imported": False,
        "same": {"adamw": same, "adam": same},
    }


def test_a_training_run_does_not_import_dynamo(tmp_path):
    """``iclab train`` (checkpoints, logging and a resume included) leaves torch._dynamo and
    sympy unimported, which would add about 70 MB to the peak memory of every run, and joblib
    (the tree and network yardsticks' worker threads: 2.6 MB)."""
    run = str(tmp_path / "run")
    train = ["train", "quickstart", "--out", run, "--set", "train.steps=6"]
    resume = ["train", "--resume", run, "--set", "train.steps=12"]
    options = ["--no-progress", "--set", "train.checkpoint_every=3", "--set", "train.log_every=2"]
    script = (
        "import sys\n"
        "from iclab.cli import app\n"
        f"for arguments in ({train + options!r}, {resume + options!r}):\n"
        "    sys.argv = ['iclab', *arguments]\n"
        "    try:\n"
        "        app(prog_name='iclab')\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
        "unused = ('torch._dynamo', 'sympy', 'joblib')\n"
        "print(sorted(name for name in unused if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert [row["step"] for row in RunDir(run).read_metrics()][-1] == 12
