"""Evaluation time under each distribution shift, against the unshifted evaluation.

The quickstart model (4 layers, d_model 64; random weights: the time does not depend on them)
and the quickstart's yardsticks on 1280 prompts of d = 5 linear regression, 21 points, as
``iclab eval runs/quickstart --shift NAME`` runs them. Prompt shifts cost one more pass each;
query shifts (random_orthant, orthogonal_query, query_in_context) score one prompt per query
position, so they cost about n/2 passes of growing prefixes.

    PYTHONPATH=src python benchmarks/eval_shifts.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from iclab.algorithms import build_algorithm
from iclab.config import load_config
from iclab.evaluation.curves import evaluate
from iclab.evaluation.shifts import STANDARD_SHIFTS, build_shift


def timed(learners, task, config, shifts) -> float:
    started = time.perf_counter()
    evaluate(
        learners,
        task,
        n_points=config.task.n_points,
        n_prompts=config.eval.n_prompts,
        batch_size=config.eval.batch_size,
        seed=config.eval.seed,
        shifts=shifts,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config("quickstart")
    task = config.task.build()
    model = config.build_model().eval()
    learners = [model, *(build_algorithm(spec, task) for spec in config.eval.algorithms)]
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch "
        f"{torch.__version__}; quickstart model + {len(learners) - 1} algorithms, "
        f"{config.eval.n_prompts} prompts"
    )
    base = timed(learners, task, config, [])
    print(f"{'no shift':28s} {base:6.2f} s")
    for spec in STANDARD_SHIFTS:
        extra = timed(learners, task, config, [build_shift(spec)]) - base
        print(f"{spec:28s} {extra:6.2f} s more  ({extra / base:4.1f}× the unshifted evaluation)")
    total = timed(learners, task, config, [build_shift(spec) for spec in STANDARD_SHIFTS])
    print(f"{'all eleven, with no shift':28s} {total:6.2f} s  ({total / base:4.1f}×)")


if __name__ == "__main__":
    main()
