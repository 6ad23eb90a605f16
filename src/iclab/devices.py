"""Which device a run trains or evaluates on, with how many CPU threads, and how the host's
memory allocator keeps what a training step frees."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from iclab.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (the GPU when there is one), ``cpu`` or ``cuda``; under torchrun each process
    takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA device is available (use auto)")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ConfigError(f"device {name!r}: allowed auto, cpu, cuda")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process (None: leave torch's default, the core count)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 faster than float32: a CUDA GPU with bf16, or a
    CPU with AVX-512-BF16 or AMX (where bf16 matmuls run 2-4× float32's; without them, 20×
    slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def resolve_precision(name: str, device: torch.device) -> str:
    """``train.precision`` resolved: ``auto`` becomes bfloat16 where it is fast, else float32."""
    if name != "auto":
        return name
    return "bfloat16" if fast_bfloat16(device) else "float32"


MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks above it are still mapped and unmapped
TRIM_THRESHOLD = 2**30  # free memory at the heap's top kept up to this


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (whose malloc PyTorch's CPU allocator uses), else None."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc (PyTorch's CPU allocator) to keep freed blocks for reuse instead of
    handing them back to the kernel; returns whether it took the settings.

    By default glibc unmaps or trims freed blocks above a threshold it adapts as it goes, and a
    training step's activations are such blocks: at 4 × 128 and batch 64 the next step maps
    them again, about 6,500 page faults and 13 ms of kernel time per step (RESULTS.md, "glibc's
    malloc and the training step"). The kept memory is what the next step reuses, so the peak
    does not grow; the setting lasts for the process (after training, its freed heap stays
    mapped, up to ``TRIM_THRESHOLD``). Settings the user made through glibc's own environment
    variables are left as they are; elsewhere than glibc (macOS, musl) this does nothing."""
    libc = glibc()
    if libc is None or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameter numbers, from malloc.h
    took_mmap = libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD) == 1
    return took_mmap and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD) == 1


def release_freed_memory() -> bool:
    """Hand the freed blocks that glibc's malloc keeps (``keep_freed_memory``) back to the
    kernel, whole pages of them, wherever they are in the heap; returns whether any went.

    For when the sizes a step allocates change (a new curriculum stage; the evaluation and the
    save at a checkpoint): blocks kept for the old sizes rarely fit the new ones and would stay
    resident beside them. The quickstart's peak over 1000 steps is 491 MB with this instead of
    511 (552 instead of 582 with its ``stop_at`` checks; benchmarks/RESULTS.md). The next step
    maps what it needs again, once. Elsewhere than glibc this does nothing."""
    libc = glibc()
    return libc is not None and libc.malloc_trim(0) == 1


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak memory in MB, for run.json: ``peak_rss_mb``, the process's peak resident memory
    (imports and anything the process ran before training included: for ``iclab train``, the
    run's), where the platform reports it; on CUDA ``peak_gpu_memory_mb``, the most the device's
    allocator held for tensors since ``reset_peak_memory``."""
    peaks = {}
    try:
        import resource
    except ImportError:  # Windows
        pass
    else:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, else KiB
        peaks["peak_rss_mb"] = round(maxrss / (2**20 if sys.platform == "darwin" else 2**10), 1)
    if device.type == "cuda":
        peaks["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peaks


def describe_peak_memory(memory: dict[str, float]) -> str:
    """``peak_memory_mb``'s numbers (or run.json's) in words: "peak memory 396 MB, GPU 1,024 MB"."""
    texts = []
    if "peak_rss_mb" in memory:
        texts.append(f"peak memory {memory['peak_rss_mb']:,.0f} MB")
    if "peak_gpu_memory_mb" in memory:
        texts.append(f"GPU {memory['peak_gpu_memory_mb']:,.0f} MB")
    return ", ".join(texts)


def reset_peak_memory(device: torch.device) -> None:
    """Start ``peak_gpu_memory_mb`` afresh (a resumed run reports its own part); the process's
    peak resident memory cannot be reset portably, and is left as it is."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
