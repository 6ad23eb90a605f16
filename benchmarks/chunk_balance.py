"""Balanced chunks vs chunks of the full chunk size, for the chunked forms of the linear mixers.

    python benchmarks/chunk_balance.py                      # gla and deltanet, 21 and 41 points
    python benchmarks/chunk_balance.py --mixers retention --points 41,81

A chunked form used to cut T steps into chunks of ``chunk_size`` (64) and pad the last one, so
82 tokens (41 examples) cost two full chunks of 64; ``balanced_chunks`` makes them two of 41.
Times forward + backward of the quickstart model (4 × 64, 4 heads, batch 128, bfloat16 autocast,
one thread) both ways, alternating round by round in one process, and prints the best time of
each and their ratio (padded ÷ balanced).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from unittest import mock

import torch

from iclab.config import ModelConfig, TaskConfig
from iclab.episode import Episode
from iclab.models.mixers import deltanet, linear_attention
from iclab.models.model import build_model


def padded_chunks(length: int, chunk_size: int) -> tuple[int, int]:
    """The old rule: chunks of the full size (the sequence's length when shorter), the last one
    padded."""
    size = min(chunk_size, length)
    return -(-length // size), size


def step_seconds(model: torch.nn.Module, episode: Episode, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predictions = model(episode)
        predictions.float().pow(2).mean().backward()
    return (time.perf_counter() - started) / repeats


def timed(
    rule: Callable[[int, int], tuple[int, int]] | None,
    model: torch.nn.Module,
    episode: Episode,
    repeats: int,
) -> float:
    """``step_seconds`` with the chunks ``rule`` makes (None: the library's, balanced)."""
    if rule is None:
        return step_seconds(model, episode, repeats)
    with (
        mock.patch.object(linear_attention, "balanced_chunks", rule),
        mock.patch.object(deltanet, "balanced_chunks", rule),
    ):
        return step_seconds(model, episode, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixers", default="gla,deltanet")
    parser.add_argument("--points", default="21,41")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    print("mixer | points | tokens | padded (ms) | balanced (ms) | padded ÷ balanced")
    for mixer in arguments.mixers.split(","):
        for n_points in map(int, arguments.points.split(",")):
            task = TaskConfig(n_dims=5, n_points=n_points)
            torch.manual_seed(0)
            config = ModelConfig(mixer=mixer, n_layers=4, d_model=64, n_heads=4)
            model = build_model(config, task.io(), n_points)
            generator = torch.Generator().manual_seed(0)
            episode = Episode(
                inputs=torch.randn(128, n_points, 5, generator=generator),
                targets=torch.randn(128, n_points, generator=generator),
            )
            best = {"padded": float("inf"), "balanced": float("inf")}
            for round_ in range(arguments.rounds + 1):  # round 0 warms up
                for name, rule in (("padded", padded_chunks), ("balanced", None)):
                    seconds = timed(rule, model, episode, arguments.repeats)
                    if round_:
                        best[name] = min(best[name], seconds)
            padded, balanced = best["padded"] * 1e3, best["balanced"] * 1e3
            tokens = 2 * n_points
            print(
                f"{mixer} | {n_points} | {tokens} | {padded:.1f} | {balanced:.1f} | "
                f"{padded / balanced:.2f}"
            )


if __name__ == "__main__":
    main()
