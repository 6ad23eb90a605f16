"""Sequence mixers side by side: training cost per length, streaming state, chunked vs quadratic.

    python benchmarks/mixers.py                                  # CPU, every mixer
    python benchmarks/mixers.py --device cuda --dtype bfloat16   # GPU (optional kernels on)
    python benchmarks/mixers.py --mixers softmax,gla --lengths 64,1024

1. Forward + backward time of one mixer layer (median of repeats) and memory for T = 64 … 4096.
   Memory is the peak CUDA allocation on a GPU; on CPU, where no allocator reports a peak, it is
   the bytes autograd saves for the backward pass (the part of training memory that grows with
   T). A cell over ``--budget`` seconds ends that mixer's row.
2. Streaming: the floats in each mixer's state after t tokens, read from the state itself after
   ``step`` was called t times (flat for linear attention, SSMs and RNNs; linear in t for the
   KV cache).
3. Chunked vs quadratic (parallel) form of the multi-form mixers at T ≥ 1024, as time ratios.
4. On CUDA with flash-linear-attention: the pure chunked form vs the fla kernel, as time ratios.

All numbers come from one run of this script, so the ratios are measured side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from iclab.models.mixers import MIXERS, resolve_mixer
from iclab.models.mixers.base import state_numel


def build(spec: str, width: int, heads: int, device: str, dtype: torch.dtype, **overrides):
    cls, options = resolve_mixer(spec)
    if overrides:
        options = options.model_copy(update=overrides)
    return cls(width, heads, options).to(device=device, dtype=dtype)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def saved_bytes(mixer, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        mixer(x).sum().backward()
    return sum(storages.values())


def training_cost(mixer, x: torch.Tensor, device: str, repeats: int) -> tuple[float, float]:
    """(median seconds of forward + backward, memory in MB)."""
    mixer(x).sum().backward()  # warm-up (kernel compilation, allocator)
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        mixer(x).sum().backward()
        synchronize(device)
        times.append(time.perf_counter() - started)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        mixer(x).sum().backward()
        memory = torch.cuda.max_memory_allocated() - before
    else:
        memory = saved_bytes(mixer, x)
    return statistics.median(times), memory / 2**20


def cost_table(args, dtype: torch.dtype) -> None:
    print(f"\n## 1. forward + backward per layer: ms (memory MB), batch {args.batch}")
    print("| mixer | " + " | ".join(f"T={t}" for t in args.lengths) + " |")
    print("| --- |" + " ---: |" * len(args.lengths))
    for spec in args.mixers:
        mixer = build(spec, args.width, args.heads, args.device, dtype)
        cells, over_budget = [], False
        for length in args.lengths:
            if over_budget:
                cells.append("–")
                continue
            x = torch.randn(args.batch, length, args.width, device=args.device, dtype=dtype)
            seconds, memory = training_cost(mixer, x, args.device, args.repeats)
            cells.append(f"{1000 * seconds:.1f} ({memory:.0f})")
            over_budget = seconds > args.budget
        print(f"| {spec} | " + " | ".join(cells) + " |")


@torch.no_grad()
def streaming_table(args, dtype: torch.dtype) -> None:
    print("\n## 2. streaming state per layer and sequence (floats), read from the state")
    print("| mixer | " + " | ".join(f"t={t}" for t in args.lengths) + " |")
    print("| --- |" + " ---: |" * len(args.lengths))
    for spec in args.mixers:
        mixer = build(spec, args.width, args.heads, args.device, dtype).eval()
        state = mixer.init_state(1, torch.device(args.device), dtype)
        x = torch.randn(max(args.lengths), 1, args.width, device=args.device, dtype=dtype)
        counts = {}
        for t in range(1, max(args.lengths) + 1):
            _, state = mixer.step(x[t - 1], state)
            if t in args.lengths:
                counts[t] = state_numel(state)
                assert counts[t] == mixer.state_size(t), (spec, t)
        print(f"| {spec} | " + " | ".join(f"{counts[t]:,}" for t in args.lengths) + " |")


def chunked_table(args, dtype: torch.dtype) -> None:
    long = [t for t in args.lengths if t >= 1024]
    print("\n## 3. quadratic (parallel) / chunked form, forward + backward time ratio")
    print("| mixer | " + " | ".join(f"T={t}" for t in long) + " |")
    print("| --- |" + " ---: |" * len(long))
    for spec in args.mixers:
        cls, _ = resolve_mixer(spec)
        if not {"parallel", "chunked"} <= set(cls.forms):
            continue
        cells = []
        for length in long:
            x = torch.randn(args.batch, length, args.width, device=args.device, dtype=dtype)
            seconds = {}
            for form in ("parallel", "chunked"):
                mixer = build(spec, args.width, args.heads, args.device, dtype, form=form)
                seconds[form], _ = training_cost(mixer, x, args.device, args.repeats)
            cells.append(f"{seconds['parallel'] / seconds['chunked']:.2f}")
        print(f"| {spec} | " + " | ".join(cells) + " |")


def kernel_table(args, dtype: torch.dtype) -> None:
    """Pure-PyTorch chunked form / flash-linear-attention kernel (CUDA with fla only)."""
    from iclab.models.mixers.kernels import fla_ops, gated_kernel_is_correct
    from iclab.models.mixers.linear_attention import GatedLinearAttention

    if args.device != "cuda" or fla_ops() is None:
        print("\n## 4. kernels: skipped (needs --device cuda and flash-linear-attention)")
        return
    print("\n## 4. pure chunked form / fla kernel, forward + backward time ratio")
    print("| mixer | " + " | ".join(f"T={t}" for t in args.lengths) + " |")
    print("| --- |" + " ---: |" * len(args.lengths))
    for spec in args.mixers:
        cls = resolve_mixer(spec)[0]
        if "kernel" not in cls.Options.model_fields:
            continue
        if issubclass(cls, GatedLinearAttention) and not gated_kernel_is_correct():
            print(f"| {spec} | " + " | ".join(["pure form (fla #640)"] * len(args.lengths)) + " |")
            continue
        cells = []
        for length in args.lengths:
            x = torch.randn(args.batch, length, args.width, device=args.device, dtype=dtype)
            seconds = {}
            for kernel in (False, True):
                mixer = build(spec, args.width, args.heads, args.device, dtype, kernel=kernel)
                seconds[kernel], _ = training_cost(mixer, x, args.device, args.repeats)
            cells.append(f"{seconds[False] / seconds[True]:.2f}")
        print(f"| {spec} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixers", default=",".join(MIXERS.names()))
    parser.add_argument("--lengths", default="64,256,1024,4096")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per cell")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sections", default="1,2,3,4")
    args = parser.parse_args()
    args.mixers = args.mixers.split(",")
    args.lengths = [int(t) for t in args.lengths.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"# mixers: width {args.width}, {args.heads} heads, {args.dtype}, {device_name}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    sections = {"1": cost_table, "2": streaming_table, "3": chunked_table, "4": kernel_table}
    for section in args.sections.split(","):
        sections[section](args, dtype)


if __name__ == "__main__":
    main()
