"""What a reproduction costs at a scale: the training FLOPs of every run it trains, and the GPU
time they take, estimated before anyone has to find out.

The FLOPs are counted exactly (``training_flops_per_step`` at each run's final prompt length,
an upper bound under a curriculum, times its steps). Turning them into time needs two stated
assumptions, because small in-context models are rarely limited by arithmetic alone:

- ``ASSUMED_MFU`` of an H100's dense peak for the run's matmul precision (TF32 for float32,
  bfloat16 for bfloat16 and auto): what a compute-bound step reaches;
- ``SECONDS_PER_LAYER_STEP``: eager PyTorch issues on the order of a hundred kernels per block
  per training step (forward, backward, optimizer), each taking ~10-20 µs to launch, so a step
  of a narrow model takes about this long per layer however few its FLOPs.

Each run takes the longer of the two; evaluation and probing are left out (minutes at most next
to training hours). Expect the estimate to be right within a factor of about two.

On a CPU thread a step costs the sum of a per-layer and a per-FLOP time, both fitted on the
reproductions' own runs (``cpu_step_seconds``): rough, but it ranks runs' steps for progress.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from iclab.config import RunConfig
from iclab.training.flops import device_peak, training_flops_per_step

ESTIMATE_GPU = "H100"
ASSUMED_MFU = 0.3
SECONDS_PER_LAYER_STEP = 2e-3
# A CPU thread's step: fitted on one-thread steps of the CPU-scale reproductions' runs (2 to 4
# layers, 0.03 to 15 GFLOP a step; benchmarks/RESULTS.md). Mixers that scan sequentially (Mamba)
# and large read-outs (dpt-bandit) run slower than this says.
CPU_SECONDS_PER_LAYER_STEP = 6e-3
CPU_SECONDS_PER_FLOP = 1.2e-12


def step_flops(config: RunConfig) -> float:
    """FLOPs of one of ``config``'s training steps at full-size prompts (the model built on the
    meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        model = config.build_model()
    return training_flops_per_step(model, config.train.batch_size, config.task.n_points)


def training_flops(config: RunConfig) -> float:
    """FLOPs of training ``config``'s model for all its steps."""
    return step_flops(config) * config.train.steps


def cpu_step_seconds(config: RunConfig) -> float:
    """A rough time of one of ``config``'s training steps on one CPU thread: a cost per layer
    (a narrow model's many small kernels) plus one per FLOP; a 15-GFLOP step took as long as
    three 0.4-GFLOP ones. Good for the ratios between runs (``--jobs``' progress weights each
    run's steps by it), not as a forecast."""
    per_layer = config.model.n_layers * CPU_SECONDS_PER_LAYER_STEP
    return per_layer + step_flops(config) * CPU_SECONDS_PER_FLOP


def gpu_seconds(config: RunConfig) -> float:
    """Estimated seconds to train ``config`` on one H100: the FLOPs at ``ASSUMED_MFU`` of its
    peak, or the launch-bound time per step, whichever is longer."""
    math = "tf32" if config.train.precision == "float32" else "bfloat16"
    peak = device_peak(ESTIMATE_GPU, math)
    assert peak is not None  # the H100 is in flops.KNOWN_PEAKS
    compute = training_flops(config) / (ASSUMED_MFU * peak)
    launches = config.train.steps * config.model.n_layers * SECONDS_PER_LAYER_STEP
    return max(compute, launches)


def gpu_hours(configs: Iterable[RunConfig]) -> float:
    """Estimated H100 hours to train every config of ``configs``, one after another."""
    return sum(gpu_seconds(config) for config in configs) / 3600
