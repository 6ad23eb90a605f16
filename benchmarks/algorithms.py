"""Evaluation time of every registered algorithm on 1280 prompts of its family.

Each algorithm is timed on the family whose yardsticks list it (else the first family it applies
to), at that family's default sizes, on the prompts ``iclab eval`` would draw (batches of 256 from
the eval stream). The time covers ``predict`` only (and, for algorithms that tune themselves, the
tuning when it is built, shown apart); sampling is timed once per family and shown beside it.

Algorithms that fit a model per prefix can take CPU-hours: each is first timed on ``--probe``
prompts, and when the full run would exceed ``--budget`` seconds its time is extrapolated
linearly (prompts are independent) and marked ``~``.

    PYTHONPATH=src python benchmarks/algorithms.py [--n-prompts 1280] [--only gd,lasso]
    python benchmarks/algorithms.py --only logistic_regression --family tabular_classification
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch

from iclab.algorithms import ALGORITHMS, build_algorithm
from iclab.seeding import generator_for
from iclab.tasks import TASKS, make_task

BATCH_SIZE = 256


# Learners no family lists by default (too slow, or not the family's best), and the family they
# belong with.
HOMES = {"two_layer_nn": "relu_network", "preconditioned_gd": "linear_regression"}


def home_family(name: str) -> str:
    """The family an algorithm is benchmarked on: its ``HOMES`` entry, else linear regression or
    another family that lists it as a yardstick, else the first family it applies to."""
    if name in HOMES:
        return HOMES[name]
    families = sorted(TASKS, key=lambda item: item[0] != "linear_regression")
    for family_name, family in families:
        if name in (spec.split("(")[0] for spec in family.yardsticks):
            return family_name
    for family_name, family in TASKS:
        if ALGORITHMS.get(name).applies(family()):
            return family_name
    raise ValueError(f"{name} applies to no registered family")


def sample_batches(family_name: str, n_prompts: int):
    task = make_task(family_name)
    n_points = type(task).default_n_points
    start = time.perf_counter()
    batches = [
        task.sample(
            min(BATCH_SIZE, n_prompts - i * BATCH_SIZE), n_points, generator_for(1, "eval", i)
        )
        for i in range(math.ceil(n_prompts / BATCH_SIZE))
    ]
    return task, batches, time.perf_counter() - start


def time_predictions(algorithm, batches, args) -> tuple[float, bool]:
    """Seconds to predict every batch, and whether measured (True) or extrapolated (False)."""
    probe = batches[0].first(args.probe)
    start = time.perf_counter()
    algorithm.predict(probe)
    projected = (time.perf_counter() - start) * args.n_prompts / probe.batch_size
    if projected > args.budget:
        return projected, False
    start = time.perf_counter()
    for episode in batches:
        algorithm.predict(episode)
    return time.perf_counter() - start, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=1280)
    parser.add_argument("--only", default="", help="comma-separated algorithm names")
    parser.add_argument("--probe", type=int, default=32, help="prompts of the first timing")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per algorithm")
    parser.add_argument(
        "--family",
        choices=TASKS.names(),
        help="time on this family instead of each algorithm's own (those not applying skipped)",
    )
    args = parser.parse_args()
    names = [n for n in ALGORITHMS.names() if not args.only or n in args.only.split(",")]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{args.n_prompts} prompts per algorithm\n"
    )
    print(
        f"{'algorithm':<22}{'family':<28}{'d':>4}{'n':>5}{'seconds':>11}"
        f"{'setup s':>9}{'sampling s':>12}"
    )
    cache: dict[str, tuple] = {}
    total = 0.0
    for name in names:
        family_name = args.family or home_family(name)
        if family_name not in cache:
            cache[family_name] = sample_batches(family_name, args.n_prompts)
        task, batches, sampling = cache[family_name]
        if not ALGORITHMS.get(name).applies(task):
            continue
        start = time.perf_counter()
        algorithm = build_algorithm(name, task)
        setup = time.perf_counter() - start
        seconds, exact = time_predictions(algorithm, batches, args)
        total += seconds
        d = "-" if task.kind == "tokens" else task.n_dims
        shown = f"{seconds:.2f}" if exact else f"~{seconds:.0f}"
        print(
            f"{name:<22}{family_name:<28}{d:>4}{batches[0].n_points:>5}{shown:>11}"
            f"{setup:>9.2f}{sampling:>12.3f}",
            flush=True,
        )
    print(f"\ntotal {total:.1f} s")


if __name__ == "__main__":
    main()
