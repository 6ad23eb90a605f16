"""FLOPs per step against PyTorch's own count, the peak table, and MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from iclab.config import RunConfig, build_config
from iclab.metrics import training_loss
from iclab.training.flops import (
    PEAK_ENV,
    device_peak,
    matmul_params,
    peak_flops,
    training_flops_per_step,
)


def small_config(mixer: str = "softmax", batch_size: int = 8, n_points: int = 21) -> RunConfig:
    return build_config(
        {
            "task": {"name": "linear_regression", "n_dims": 5, "n_points": n_points},
            "model": {"mixer": mixer, "n_layers": 2, "d_model": 64, "n_heads": 4},
            "train": {"batch_size": batch_size, "device": "cpu"},
        }
    )


def estimated(config: RunConfig, n_points: int | None = None) -> float:
    """The estimate for a config's model and batch, at ``n_points`` (default the task's)."""
    model = config.build_model()
    return training_flops_per_step(model, config.train.batch_size, n_points or config.task.n_points)


def counted_training_flops(config: RunConfig) -> int:
    """Matmul FLOPs of one forward + backward as PyTorch's dispatcher sees them. SDPA runs in
    its math form, whose bmm's the counter sees (it has no formula for the fused CPU kernel),
    and which, like PaLM's 12·E·T, multiplies the full T × T matrix, masked half included."""
    torch.manual_seed(0)
    model = config.build_model()
    episode = config.task.build().sample(
        config.train.batch_size, config.task.n_points, torch.Generator().manual_seed(0)
    )
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        training_loss(model(episode), episode).backward()
    return counter.get_total_flops()


def test_softmax_estimate_matches_the_counted_flops_of_a_training_step():
    # Left between them: the read-in needs no input gradient and the read-out runs at half the
    # positions (the estimate counts both at full cost, ~0.1% here); layer norms, softmax, GELU
    # and the loss are elementwise and counted by neither.
    config = small_config("softmax")
    assert estimated(config) == pytest.approx(counted_training_flops(config), rel=0.02)


def test_attention_free_estimate_matches_the_counted_flops_of_a_gru_step():
    # The GRU's gates are matmuls with its weight matrices, which the estimate counts exactly;
    # the gate nonlinearities and the recurrence's elementwise products are uncounted by both.
    config = small_config("gru")
    assert estimated(config) == pytest.approx(counted_training_flops(config), rel=0.02)


def test_attention_term_is_what_separates_softmax_from_its_parameter_matmuls():
    config = small_config("softmax")
    model = config.build_model()
    tokens, length = 8 * 42, 42
    attention = 12 * 2 * 64 * length * tokens  # 2 softmax layers, E = 64
    assert estimated(config) == 6 * matmul_params(model) * tokens + attention


def test_matmul_params_leave_out_embeddings_biases_and_norms():
    config = small_config("softmax")
    model = config.build_model()
    # per block: qkv 64×192, proj 64×64, MLP 64×256 twice; codec: read-in 5×64, read-out 64×1
    assert matmul_params(model) == 2 * (64 * 192 + 64 * 64 + 2 * 64 * 256) + 5 * 64 + 64
    assert matmul_params(model) < model.n_params() - model.backbone.position.weight.numel()


@pytest.mark.parametrize("mixer", ["softmax", "gru"])
def test_doubling_the_batch_doubles_the_estimate(mixer):
    single = estimated(small_config(mixer, batch_size=8))
    assert estimated(small_config(mixer, batch_size=16)) == 2 * single


def test_doubling_the_prompt_more_than_doubles_softmax_and_exactly_doubles_gru():
    softmax = small_config("softmax")
    assert estimated(softmax, n_points=20) > 2.05 * estimated(softmax, n_points=10)
    gru = small_config("gru")
    assert estimated(gru, n_points=20) == 2 * estimated(gru, n_points=10)


def test_an_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="n_points"):
        training_flops_per_step(small_config("softmax").build_model(), 8, n_points=0)


@pytest.mark.parametrize(
    ("name", "math", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12),
        ("NVIDIA H100 80GB HBM3", "tf32", 494.7e12),
        ("NVIDIA H200", "float32", 66.9e12),
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA H100 PCIe", "tf32", 378e12),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156e12),
        ("NVIDIA A100 80GB PCIe", "bfloat16", 312e12),
        ("NVIDIA L4", "bfloat16", 121e12),
        ("NVIDIA GeForce RTX 4090", "tf32", 82.6e12),
        ("NVIDIA H100 NVL", "bfloat16", None),
        ("NVIDIA L40S", "bfloat16", None),
        ("NVIDIA A10G", "bfloat16", None),
    ],
)
def test_device_names_map_to_their_datasheet_peaks(name, math, expected):
    assert device_peak(name, math) == expected


@pytest.fixture
def tf32_flag():
    """Sets ``torch.backends.cuda.matmul.allow_tf32`` (a property monkeypatch cannot undo)
    and restores it afterwards."""
    original = torch.backends.cuda.matmul.allow_tf32

    def set_flag(value: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32 = value

    yield set_flag
    torch.backends.cuda.matmul.allow_tf32 = original


def test_float32_training_on_cuda_is_measured_against_tf32_when_the_trainer_enables_it(
    monkeypatch, tf32_flag
):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    tf32_flag(True)
    assert peak_flops(torch.device("cuda"), "float32") == 494.7e12
    assert peak_flops(torch.device("cuda"), "bfloat16") == 989.4e12
    tf32_flag(False)
    assert peak_flops(torch.device("cuda"), "float32") == 66.9e12


def test_cpu_has_no_peak_unless_the_environment_gives_one(monkeypatch):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    assert peak_flops(torch.device("cpu"), "float32") is None
    monkeypatch.setenv(PEAK_ENV, "0.5")
    assert peak_flops(torch.device("cpu"), "float32") == 0.5e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert peak_flops(torch.device("cuda"), "bfloat16") == 0.5e12  # overrides known devices


@pytest.mark.parametrize("value", ["fast", "-3", "0"])
def test_a_bad_peak_in_the_environment_is_named(monkeypatch, value):
    monkeypatch.setenv(PEAK_ENV, value)
    with pytest.raises(ValueError, match=PEAK_ENV):
        peak_flops(torch.device("cpu"), "float32")


def test_unknown_precision_and_math_are_refused():
    with pytest.raises(ValueError, match="float16"):
        peak_flops(torch.device("cpu"), "float16")
    with pytest.raises(ValueError, match="fp8"):
        device_peak("NVIDIA H100 80GB HBM3", "fp8")
