"""Training throughput: steps/s, tokens/s, FLOPs and MFU, the sampling share, peak memory.

    python benchmarks/train_speed.py                       # quickstart model, full-size prompts
    python benchmarks/train_speed.py --config configs/garg_linear_regression.yaml --steps 20
    python benchmarks/train_speed.py --config configs/garg_linear_regression.yaml \\
        --device cuda --precision bfloat16 --compile

Runs the real ``Trainer.train_step`` (sampling, forward, backward, clipping, AdamW); the
trainer writes nothing. The curriculum is switched off so every step has full-size prompts.
FLOPs per step are the PaLM-style estimate of ``iclab.training.flops``; MFU needs the device's
peak, known for common NVIDIA GPUs, otherwise given by ``--peak-tflops`` (or ICLAB_PEAK_TFLOPS).
On CUDA the clock is read after ``torch.cuda.synchronize``; sampling is synchronised before
and after too, so its share is its real GPU time (at the cost of two syncs per step).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from iclab.config import load_config
from iclab.training.flops import peak_flops, training_flops_per_step
from iclab.training.trainer import Trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedSampler:
    """Wraps a task's ``sample`` to add up the time spent in it."""

    def __init__(self, sample, device: torch.device):
        self.sample = sample
        self.device = device
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        synchronize(self.device)
        started = time.perf_counter()
        episode = self.sample(*args, **kwargs)
        synchronize(self.device)
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
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], help="train.precision")
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)"
    )
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak-tflops must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["train.curriculum.dims=null", "train.curriculum.points=null"]
    overrides += [f"train.device={args.device}"] if args.device else []
    overrides += [f"train.precision={args.precision}"] if args.precision else []
    overrides += ["train.compile=true"] if args.compile else []
    config = load_config(args.config, overrides + args.overrides)
    rss_before = peak_rss_mb()
    trainer = Trainer(config)
    config, device = trainer.config, trainer.device  # precision: auto resolved
    sampler = TimedSampler(trainer.task.sample, device)
    trainer.task.sample = sampler
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.warmup):
        trainer.train_step(step)
    sampler.seconds = 0.0
    synchronize(device)
    started = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        loss, _ = trainer.train_step(step)
    loss.item()
    synchronize(device)
    elapsed = time.perf_counter() - started

    steps_per_second = args.steps / elapsed
    tokens_per_step = config.train.batch_size * trainer.model.codec.tokens_per_example
    tokens_per_step *= config.task.n_points
    flops_per_step = training_flops_per_step(
        trainer.model, config.train.batch_size, config.task.n_points
    )
    peak = (
        args.peak_tflops * 1e12
        if args.peak_tflops is not None
        else peak_flops(device, config.train.precision)
    )
    utilisation = None if peak is None else flops_per_step * steps_per_second / peak
    model = config.model
    print(
        f"config      {config.name}: {model.n_layers} layers, {model.d_model} wide, "
        f"{model.n_heads} heads, d={config.task.n_dims}, {config.task.n_points} points, "
        f"batch {config.train.batch_size}, {trainer.model.n_params():,} parameters"
    )
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"device      {device}{name}, {config.train.precision}, "
        f"compile {config.train.compile}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print(f"steps/s     {steps_per_second:.2f}")
    print(f"tokens/s    {steps_per_second * tokens_per_step:,.0f}")
    print(
        f"FLOPs/step  {flops_per_step / 1e9:.2f} GFLOP (6·N per token + 12·E·T per attention layer)"
    )
    print(f"achieved    {flops_per_step * steps_per_second / 1e12:.4f} TFLOP/s")
    if utilisation is None:
        print(f"MFU         n/a: no peak known for {device.type}; pass --peak-tflops")
    else:
        print(f"MFU         {100 * utilisation:.1f}% of {peak / 1e12:.4g} TFLOP/s")
    print(f"sampling    {100 * sampler.seconds / elapsed:.2f}% of step time")
    if device.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA)")
    else:
        print(f"peak RSS    {peak_rss_mb():.0f} MB (after imports: {rss_before:.0f} MB)")


if __name__ == "__main__":
    main()
