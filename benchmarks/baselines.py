"""Time the batched reference learners against a per-prefix loop, in one run.

The loop is what Garg et al.'s reference code does for least squares: one batched ``pinv`` per
prefix length. The batched ``prefix_least_squares`` does every prefix at once (exactly, in
float64). Both run on the same prompts; the script prints their median times, the speed-up and the
largest difference between their predictions.

    PYTHONPATH=src python benchmarks/baselines.py [--batch-size 1280 --n-points 41 --n-dims 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from iclab.algorithms.regression import prefix_knn, prefix_least_squares, prefix_ridge
from iclab.tasks.regression import LinearRegression


def loop_least_squares(inputs: Tensor, targets: Tensor) -> Tensor:
    """``pred_i = x_i · pinv(X_{<i}) y_{<i}``, batched over prompts, one prefix at a time."""
    preds = torch.zeros_like(targets)
    for i in range(1, inputs.shape[1]):
        w = torch.linalg.pinv(inputs[:, :i]) @ targets[:, :i, None]  # (B, d, 1)
        preds[:, i] = (inputs[:, i] * w.squeeze(-1)).sum(-1)
    return preds


def median_seconds(
    run: Callable[[], Tensor], device: torch.device, warmup: int, repeats: int
) -> tuple[float, Tensor]:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        output = run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), output


def max_difference(preds: Tensor, reference: Tensor, away_from_d: Tensor) -> str:
    """Largest absolute difference, over all k and over k != d (k = d is ill-conditioned)."""
    difference = (preds - reference).abs()  # (B, n)
    return f"{difference.max().item():.3e} (k != d: {difference[:, away_from_d].max().item():.3e})"


def show(label: str, value: str) -> None:
    print(f"{label + ':':<48}{value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1280, help="prompts")
    parser.add_argument("--n-points", type=int, default=41, help="examples per prompt")
    parser.add_argument("--n-dims", type=int, default=20, help="input dimension d")
    parser.add_argument("--noise-std", type=float, default=0.0, help="noise of the targets")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    task = LinearRegression(args.n_dims, LinearRegression.Options(noise_std=args.noise_std))
    generator = torch.Generator(device=device).manual_seed(args.seed)
    episode = task.sample(args.batch_size, args.n_points, generator)
    inputs, targets = episode.inputs, episode.targets  # float32, as the task samples them

    def time_it(run: Callable[[], Tensor]) -> tuple[float, Tensor]:
        return median_seconds(run, device, args.warmup, args.repeats)

    batched_s, batched = time_it(lambda: prefix_least_squares(inputs, targets))
    loop_s, looped = time_it(lambda: loop_least_squares(inputs, targets))
    ridge_s, _ = time_it(lambda: prefix_ridge(inputs, targets, alpha=0.1))
    knn_s, _ = time_it(lambda: prefix_knn(inputs, targets, k=3))

    d = args.n_dims
    away_from_d = torch.ones(args.n_points, dtype=torch.bool, device=device)
    away_from_d[d : d + 1] = False
    # The loop runs in float32 like the prompts: a float64 loop tells whose error a difference is.
    reference = loop_least_squares(inputs.double(), targets.double()).float()

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"{args.batch_size} prompts x {args.n_points} points, d = {d}, noise_std = "
        f"{args.noise_std}, {inputs.dtype} inputs, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load}; "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    show("least squares, batched (prefix_least_squares)", f"{batched_s:8.4f} s")
    show("least squares, loop of pinv over prefixes", f"{loop_s:8.4f} s")
    show("speed-up (loop / batched)", f"{loop_s / batched_s:8.1f}x")
    show("max |batched - loop|", max_difference(batched, looped, away_from_d))
    show("max |batched - float64 loop|", max_difference(batched, reference, away_from_d))
    show("max |loop - float64 loop|", max_difference(looped, reference, away_from_d))
    show("ridge (alpha = 0.1), batched", f"{ridge_s:8.4f} s")
    show("knn (k = 3), batched", f"{knn_s:8.4f} s")


if __name__ == "__main__":
    main()
