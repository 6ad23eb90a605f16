"""Seconds of training until a model learns in context: error / E[y²] ≤ 0.1 at k = 2d.

    python benchmarks/time_to_icl.py                                  # the quickstart recipe
    python benchmarks/time_to_icl.py --variant model.tokens=lagged --variant train.precision=float32
    python benchmarks/time_to_icl.py --mixers "softmax, mamba(d_state=8)" --set train.lr=3e-3

Each variant (a list of ``model.tokens=...`` / ``train.precision=...`` / any dotted override,
``+``-joined for several) trains the quickstart task (d = 5, 21 points) from the preset's
recipe (its own mixer, or each of ``--mixers`` at its ``train.lr: auto`` rate), once per
training seed, for at most ``--budget`` seconds. Every ``--every`` steps the clock stops and
the model is evaluated on 1280 fresh prompts for each of ``--eval-seeds`` evaluation seeds
(the error at k = 2d, averaged over them); the time to threshold is the training time
(sampling, forward, backward, step) when that average first reaches 0.1. The table gives each
seed's time and the mean over seeds (a seed that never gets there counts as the budget, marked
>), and the error and step each seed ended at (at the threshold, or where the budget ran out).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from iclab.config import load_config
from iclab.evaluation.curves import evaluate
from iclab.specs import split_specs
from iclab.training.trainer import Trainer

THRESHOLD = 0.1


def error_at_2d(trainer: Trainer, eval_seeds: int) -> float:
    """The model's error at k = 2d on 1280 fresh prompts, averaged over the evaluation seeds."""
    task, config = trainer.task, trainer.config
    k = 2 * config.task.n_dims
    errors = []
    for seed in range(1, eval_seeds + 1):
        evaluation = evaluate(
            [trainer.model], task, config.task.n_points, 1280, 256, seed, device=trainer.device
        )
        errors.append(next(p.mean for p in evaluation.curves if p.k == k))
    return statistics.mean(errors)


def time_to_threshold(
    config, budget: float, every: int, eval_seeds: int
) -> tuple[float, int, float]:
    """(training seconds until the threshold, or inf; the steps trained; the last error)."""
    trainer = Trainer(config)
    trained, error = 0.0, float("nan")
    while trainer.step < config.train.steps and trained < budget:
        started = time.perf_counter()
        for _ in range(min(every, config.train.steps - trainer.step)):
            trainer.train_step(trainer.step)
            trainer.step += 1
        trained += time.perf_counter() - started
        error = error_at_2d(trainer, eval_seeds)
        if error <= THRESHOLD:
            return trained, trainer.step, error
    return float("inf"), trainer.step, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument(
        "--mixers", default=None, help="comma-separated mixer specs (default: the preset's)"
    )
    parser.add_argument("--variant", action="append", default=None, help="overrides, +-joined")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=100.0, help="seconds of training")
    parser.add_argument("--every", type=int, default=100, help="steps between evaluations")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variant or [""]
    print(
        f"{args.preset}, threshold {THRESHOLD} at k = 2d, budget {args.budget:g} s, "
        f"{args.eval_seeds} evaluation seeds, {torch.get_num_threads()} threads"
    )
    print(
        f"{'mixer':18} {'variant':34} {'seconds per training seed':26} {'mean':>7}  "
        "error@steps where each seed stopped"
    )
    for mixer in split_specs(args.mixers) if args.mixers else [None]:
        swapped = [f"model.mixer={mixer}"] if mixer else []
        mixer = mixer or str(load_config(args.preset).model.mixer)
        for variant in variants:
            changes = [item for item in variant.split("+") if item]
            overrides = [*swapped, *args.overrides, *changes]
            seconds, steps, errors = [], [], []
            for seed in range(args.train_seeds):
                config = load_config(args.preset, [*overrides, f"train.seed={seed}"])
                spent, trained, error = time_to_threshold(
                    config, args.budget, args.every, args.eval_seeds
                )
                seconds.append(spent)
                steps.append(trained)
                errors.append(error)
            shown = " ".join(
                f"{s:6.1f}" if s != float("inf") else f">{args.budget:5.0f}" for s in seconds
            )
            mean = statistics.mean(min(s, args.budget) for s in seconds)
            marker = ">" if any(s == float("inf") for s in seconds) else " "
            label = "+".join(changes) + (" " + " ".join(args.overrides) if args.overrides else "")
            ended = " ".join(f"{e:.3f}@{n}" for e, n in zip(errors, steps, strict=True))
            print(
                f"{mixer:18} {label or '(preset)':34} {shown:26} {marker}{mean:6.1f}  {ended}",
                flush=True,
            )


if __name__ == "__main__":
    main()
