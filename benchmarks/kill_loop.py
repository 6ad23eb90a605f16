"""Kill -9 a real `iclab train` again and again; every resume must end bitwise where an
uninterrupted run ends (losses, optimizer state, random state, final weights).

    python benchmarks/kill_loop.py --trials 20             # the record in RESULTS.md
    python benchmarks/kill_loop.py --trials 1 --modes checkpoint --steps 100

Trials alternate between the ``--modes``: ``random`` kills the process once it has logged a
random number of its steps; ``checkpoint`` kills it in the middle of writing a checkpoint (the
process is made to stop after the checkpoint's first tensor file is written into its staging
directory, then killed). Each killed run is resumed with `iclab train --resume` and compared
with one uninterrupted run of the same config. Exits 1 if any trial differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from iclab.config import build_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = [sys.executable, "-m", "iclab", "train"]
QUIET = {"env": ENV, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def tiny_config(steps: int) -> str:
    return build_config(
        {
            "name": "tiny",
            "task": {"name": "linear_regression", "n_dims": 3, "n_points": 8},
            "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
            "train": {
                "steps": steps,
                "batch_size": 16,
                "lr": 3e-3,
                "log_every": 1,
                "checkpoint_every": 25,
                "keep_checkpoints": 3,
                "device": "cpu",
            },
        }
    ).to_yaml()


def hang_in_save(arguments: list[str]) -> None:
    """The child of a ``checkpoint`` trial: `iclab train` whose checkpoint of step STEP stops
    for good once its first tensor file is in the staging directory (and says so in MARKER)."""
    step, marker, *train_arguments = arguments
    from safetensors import torch as safetensors_torch

    from iclab.cli import app
    from iclab.training import checkpoint

    save = safetensors_torch.save_file

    def stopping_save(tensors: dict, path: str, *rest: object) -> None:
        save(tensors, path, *rest)
        if f".{checkpoint.checkpoint_name(int(step))}." in path:
            Path(marker).write_text(path)
            time.sleep(3600)

    checkpoint.save_file = stopping_save
    app(["train", *train_arguments], standalone_mode=True)


def final_state(run: Path) -> dict:
    newest = max((run / "checkpoints").glob("step-*"), key=lambda path: path.name)
    meta = json.loads((newest / "meta.json").read_text())
    return {
        "model": load_file(str(newest / "model.safetensors")),
        "optimizer": load_file(str(newest / "optimizer.safetensors")),
        "optimizer_rest": meta["optimizer"],
        "rng": meta["rng"],
        "step": meta["step"],
    }


def losses(run: Path) -> list[tuple[int, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(row["step"], row["loss"]) for row in map(json.loads, lines)]


def differences(run: Path, straight: Path) -> list[str]:
    """What differs between a resumed run and the uninterrupted one (empty: bitwise equal)."""
    found = []
    if losses(run) != losses(straight):
        found.append("losses")
    mine, theirs = final_state(run), final_state(straight)
    for key in ("model", "optimizer"):
        if mine[key].keys() != theirs[key].keys() or not all(
            torch.equal(mine[key][name], theirs[key][name]) for name in mine[key]
        ):
            found.append(key)
    found += [key for key in ("optimizer_rest", "rng", "step") if mine[key] != theirs[key]]
    leftovers = [path.name for path in (run / "checkpoints").iterdir() if path.name[0] == "."]
    if leftovers:
        found.append(f"staging left: {leftovers}")
    return found


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def kill_and_resume(mode: str, config: Path, run: Path, steps: int) -> int:
    """One trial; returns how many steps the killed process had logged."""
    arguments = [str(config), "--out", str(run), "--no-progress"]
    if mode == "random":
        target = random.randrange(1, steps)
        process = subprocess.Popen([*TRAIN, *arguments], **QUIET)
        while logged_steps(run) < target and process.poll() is None:
            time.sleep(0.001)
    else:
        step = random.randrange(25, steps, 25)
        marker = run.parent / f"{run.name}.marker"
        child = [sys.executable, __file__, "--hang-in-save", str(step), str(marker)]
        process = subprocess.Popen([*child, *arguments], **QUIET)
        while not marker.exists() and process.poll() is None:
            time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    logged = logged_steps(run)
    resume = ["--resume", str(run), "--no-progress"] if run.exists() else arguments
    subprocess.run([*TRAIN, *resume], check=True, **QUIET)  # (killed before it wrote: afresh)
    return logged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--modes", default="random,checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    random.seed(arguments.seed)
    modes = arguments.modes.split(",")
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        config = work / "tiny.yaml"
        config.write_text(tiny_config(arguments.steps))
        started = time.perf_counter()
        straight = [str(config), "--out", str(work / "straight"), "--no-progress"]
        subprocess.run([*TRAIN, *straight], check=True, **QUIET)
        seconds = time.perf_counter() - started
        print(f"uninterrupted run: {arguments.steps} steps in {seconds:.1f} s")
        equal = 0
        for trial in range(arguments.trials):
            mode = modes[trial % len(modes)]
            run = work / f"trial-{trial:02d}"
            logged = kill_and_resume(mode, config, run, arguments.steps)
            found = differences(run, work / "straight")
            equal += not found
            outcome = "bitwise equal" if not found else "DIFFERS: " + ", ".join(found)
            print(f"trial {trial:2d} ({mode}, killed after {logged} logged steps): {outcome}")
        print(f"{equal}/{arguments.trials} resumed runs bitwise equal to the uninterrupted run")
    return 0 if equal == arguments.trials else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--hang-in-save":
        hang_in_save(sys.argv[2:])
    else:
        sys.exit(main())
