"""Several runs one after another vs side by side: what `iclab reproduce --jobs` buys.

    python benchmarks/parallel_runs.py                    # 2 runs of the bursty-icl model
    python benchmarks/parallel_runs.py --preset mqar --runs 4 --steps 400

Trains the same ``--runs`` configs (seeds 0, 1, ...) twice, in one process: one after another
with every core's thread (what ``iclab reproduce`` does by default), then ``--jobs`` at a time,
each in its own process with cores ÷ jobs threads (``--jobs``). Prints both wall times and their
ratio, measured side by side in one run. Run it on an idle machine: another process on the
cores changes both numbers, and not equally.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from iclab.config import load_config
from iclab.reproductions.base import trained
from iclab.reproductions.parallel import train_in_parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bursty_classification")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=1500)
    arguments = parser.parse_args()

    overrides = {
        "bursty_classification": {"task": {"n_clusters": 4096}, "model": {"n_layers": 2}},
    }.get(arguments.preset, {})
    configs = {
        f"seed{seed}": load_config(arguments.preset).updated(
            **overrides,
            train={"steps": arguments.steps, "seed": seed, "checkpoint_every": arguments.steps},
        )
        for seed in range(arguments.runs)
    }
    cores = os.cpu_count() or 1
    print(
        f"{arguments.runs} runs of {arguments.preset}, {arguments.steps} steps each, {cores} cores"
    )
    with tempfile.TemporaryDirectory() as scratch:
        torch.set_num_threads(cores)
        started = time.perf_counter()
        for key, config in configs.items():
            trained(config, Path(scratch) / "serial" / key, show_progress=False)
        serial = time.perf_counter() - started
        print(f"one after another, {cores} threads: {serial:.1f} s")

        started = time.perf_counter()
        train_in_parallel(configs, Path(scratch) / "parallel", arguments.jobs, show_progress=False)
        parallel = time.perf_counter() - started
        print(
            f"{arguments.jobs} at a time, {max(1, cores // arguments.jobs)} thread(s) each: "
            f"{parallel:.1f} s"
        )
    print(f"speed-up: {serial / parallel:.2f}")


if __name__ == "__main__":
    main()
