"""The cost estimate of a reproduction's scale: FLOPs of every run it trains, and the GPU time
they take under the module's stated assumptions."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from iclab.cli import paper_scale_estimate
from iclab.reproductions import REPRODUCTIONS
from iclab.reproductions.budget import (
    ASSUMED_MFU,
    SECONDS_PER_LAYER_STEP,
    gpu_hours,
    gpu_seconds,
    training_flops,
)
from iclab.training.flops import device_peak, training_flops_per_step


def test_training_flops_are_the_step_count_times_the_steps():
    config = tiny_config(train={"steps": 7})
    model = config.build_model()
    per_step = training_flops_per_step(model, config.train.batch_size, config.task.n_points)
    assert training_flops(config) == pytest.approx(7 * per_step)


def test_a_narrow_model_is_launch_bound_and_a_wide_one_compute_bound():
    narrow = tiny_config(train={"steps": 100})
    layers = narrow.model.n_layers
    assert gpu_seconds(narrow) == pytest.approx(100 * layers * SECONDS_PER_LAYER_STEP)
    wide = tiny_config(
        model={"d_model": 2048, "n_heads": 16, "n_layers": 2},
        train={"steps": 100, "batch_size": 1024, "precision": "bfloat16"},
    )
    compute = training_flops(wide) / (ASSUMED_MFU * device_peak("H100", "bfloat16"))
    assert compute > 100 * 2 * SECONDS_PER_LAYER_STEP
    assert gpu_seconds(wide) == pytest.approx(compute)
    # float32 trains with TF32 matmuls on the GPU: half bfloat16's peak, twice the time
    as_float32 = wide.updated(train={"precision": "float32"})
    assert gpu_seconds(as_float32) == pytest.approx(2 * compute)
    assert gpu_hours([narrow, wide]) == pytest.approx((gpu_seconds(narrow) + compute) / 3600)


@pytest.mark.parametrize("name", REPRODUCTIONS.names())
def test_every_reproduction_costs_more_at_paper_scale_than_at_cpu_scale(name):
    reproduction = REPRODUCTIONS.get(name)
    cpu, paper = reproduction.trainings("cpu"), reproduction.trainings("paper")
    assert cpu and paper
    assert sum(map(training_flops, paper.values())) > sum(map(training_flops, cpu.values()))
    assert gpu_hours(paper.values()) > gpu_hours(cpu.values()) > 0


def test_the_paper_scale_estimate_says_when_there_is_no_gpu(monkeypatch):
    hours = gpu_hours(REPRODUCTIONS.get("garg-linear").trainings("paper").values())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = paper_scale_estimate(["garg-linear"])
    assert f"about {hours:.2g} H100 hours" in line and "no GPU here" in line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "no GPU" not in paper_scale_estimate(["garg-linear"])
