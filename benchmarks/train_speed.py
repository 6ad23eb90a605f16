"""Training throughput: steps/s, tokens/s, the share of step time spent sampling, peak memory.

    python benchmarks/train_speed.py                       # quickstart model, full-size prompts
    python benchmarks/train_speed.py --config configs/quickstart.yaml --set train.batch_size=128

Runs the real ``Trainer.train_step`` (sampling, forward, backward, clipping, AdamW) in a
temporary run directory. The curriculum is switched off so every step has full-size prompts.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from iclab.config import load_config
from iclab.run import RunDir
from iclab.training.trainer import Trainer


class TimedSampler:
    """Wraps a task's ``sample`` to add up the time spent in it."""

    def __init__(self, sample):
        self.sample = sample
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        episode = self.sample(*args, **kwargs)
        self.seconds += time.perf_counter() - started
        return episode


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quickstart", help="config file or preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=200, help="timed steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["train.curriculum.dims=null", "train.curriculum.points=null", *args.overrides]
    config = load_config(args.config, overrides)
    rss_before = peak_rss_mb()
    with tempfile.TemporaryDirectory() as directory:
        trainer = Trainer(config, RunDir(Path(directory)))
        sampler = TimedSampler(trainer.task.sample)
        trainer.task.sample = sampler
        for step in range(args.warmup):
            trainer.train_step(step)
        sampler.seconds = 0.0
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for step in range(args.warmup, args.warmup + args.steps):
            loss, _ = trainer.train_step(step)
        loss.item()
        elapsed = time.perf_counter() - started
    tokens_per_step = config.train.batch_size * 2 * config.task.n_points
    print(
        f"config      {config.name}: {config.model.n_layers} layers, {config.model.d_model} wide, "
        f"{config.model.n_heads} heads, d={config.task.n_dims}, {config.task.n_points} points, "
        f"batch {config.train.batch_size}, {trainer.model.n_params():,} parameters"
    )
    threads = torch.get_num_threads()
    print(f"device      {trainer.device}, {threads} threads, torch {torch.__version__}")
    print(f"steps/s     {args.steps / elapsed:.2f}")
    print(f"tokens/s    {args.steps * tokens_per_step / elapsed:,.0f}")
    print(f"sampling    {100 * sampler.seconds / elapsed:.2f}% of step time")
    print(f"peak RSS    {peak_rss_mb():.0f} MB (after imports: {rss_before:.0f} MB)")


if __name__ == "__main__":
    main()
