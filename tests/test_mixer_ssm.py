"""Mamba (``mamba``): every form against a plain loop over the paper's equations, the scan and its
hand-written gradient, the causal convolution, the A / Δ initialisation, bfloat16, and long
sequences with strong decays. Tolerances are relative to the output scale (see ``assert_close``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iclab.models.mixers import resolve_mixer
from iclab.models.mixers.ssm import Mamba, linear_recurrence

WIDTH, BATCH = 32, 2
FORMS = Mamba.forms


def build(spec: str = "mamba", seed: int = 0, **overrides) -> Mamba:
    """Weight matrices at scale 1/sqrt(fan-in), so outputs are of order one; A and Δ keep
    Mamba's init."""
    cls, options = resolve_mixer(spec)
    options = options.model_copy(update=overrides)
    torch.manual_seed(seed)
    mixer = cls(WIDTH, 4, options)
    with torch.no_grad():
        for name, parameter in mixer.named_parameters():
            if parameter.dim() >= 2 and name != "A_log":
                parameter.normal_(0.0, 1.0 / math.sqrt(math.prod(parameter.shape[1:])))
    return mixer.eval()


def inputs(length: int, seed: int = 1, batch: int = BATCH) -> torch.Tensor:
    return torch.randn(batch, length, WIDTH, generator=torch.Generator().manual_seed(seed))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    scale = max(expected.abs().max().item(), 1.0)
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= tolerance * scale, f"max difference {error:.3g} at output scale {scale:.3g}"


def naive_mamba(mixer: Mamba, x: torch.Tensor) -> torch.Tensor:
    """Gu & Dao 2023, Algorithm 2 and eq. (2a)-(4), one token at a time in float64, written from
    the equations with the mixer's weights only (none of its methods)."""
    p = {name: value.detach().double() for name, value in mixer.named_parameters()}
    x = x.double()
    inner, n_state, kernel = mixer.d_inner, mixer.options.d_state, mixer.options.d_conv
    u, z = (x @ p["in_proj.weight"].T).split(inner, dim=-1)  # (B, T, D) each
    A = -torch.exp(p["A_log"])  # (D, N)
    w = p["conv.weight"][:, 0]  # (D, kernel); w[:, kernel − 1] multiplies the newest input
    h = torch.zeros(x.shape[0], inner, n_state, dtype=torch.float64)
    outputs = []
    for t in range(x.shape[1]):
        conv = p["conv.bias"].clone()
        for lag in range(kernel):  # causal: inputs t, t−1, ..., t−kernel+1; zero before 0
            if t - lag >= 0:
                conv = conv + w[:, kernel - 1 - lag] * u[:, t - lag]
        x_t = F.silu(conv)  # (B, D)
        selected = x_t @ p["x_proj.weight"].T
        dt_low, B_t, C_t = selected.split([mixer.dt_rank, n_state, n_state], dim=-1)
        delta = F.softplus(dt_low @ p["dt_proj.weight"].T + p["dt_proj.bias"])  # (B, D)
        A_bar = torch.exp(delta[:, :, None] * A)  # zero-order hold, (B, D, N)
        B_bar_x = delta[:, :, None] * B_t[:, None, :] * x_t[:, :, None]  # Δ B x
        h = A_bar * h + B_bar_x
        y = (h * C_t[:, None, :]).sum(-1) + p["skip"] * x_t
        outputs.append((y * F.silu(z[:, t])) @ p["proj.weight"].T)
    return torch.stack(outputs, dim=1)


def strong_decays(mixer: Mamba) -> Mamba:
    """Half the channels forget within a step (Δ·A from about −10 to −3000; Ā underflows to 0),
    the other half barely forget (A ≈ −1e-3) and so accumulate over all 512 steps."""
    with torch.no_grad():
        half = mixer.d_inner // 2
        real = torch.arange(1, mixer.options.d_state + 1).log()
        mixer.A_log[:half] = real + math.log(50.0)
        mixer.A_log[half:] = real - math.log(1e3 * mixer.options.d_state)
        mixer.dt_proj.bias[:half] = 3.0  # Δ ≈ 3
    return mixer


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("length", [1, 6, 37])
def test_every_form_matches_a_naive_loop_over_the_paper_equations(form, length):
    mixer, x = build(form=form, chunk_size=8), inputs(length)
    with torch.no_grad():
        assert_close(mixer(x), naive_mamba(mixer, x), tolerance=1e-5)


def test_non_default_options_match_the_naive_loop_too():
    mixer = build("mamba(d_state=3, d_conv=2, expand=1, dt_rank=5, chunk_size=4)")
    x = inputs(11)
    with torch.no_grad():
        assert_close(mixer(x), naive_mamba(mixer, x), tolerance=1e-5)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("with_initial", [False, True])
def test_scan_equals_the_recurrence_and_its_gradient_is_exact(length, with_initial):
    generator = torch.Generator().manual_seed(length)
    decay = torch.rand(2, length, 3, generator=generator, dtype=torch.float64)
    drive = torch.randn(2, length, 3, generator=generator, dtype=torch.float64)
    initial = torch.randn(2, 3, generator=generator, dtype=torch.float64) if with_initial else None
    h, expected = initial if with_initial else torch.zeros(2, 3, dtype=torch.float64), []
    for t in range(length):
        h = decay[:, t] * h + drive[:, t]
        expected.append(h)
    torch.testing.assert_close(linear_recurrence(decay, drive, initial), torch.stack(expected, 1))
    arguments = [tensor.requires_grad_() for tensor in (decay, drive)] + [
        initial.requires_grad_() if with_initial else None
    ]
    assert torch.autograd.gradcheck(linear_recurrence, arguments)


def test_gradients_agree_across_forms_including_across_chunk_boundaries():
    x = inputs(23)
    gradients = {}
    for form in FORMS:
        mixer = build(form=form, chunk_size=5)
        mixer(x).square().sum().backward()
        gradients[form] = {name: p.grad for name, p in mixer.named_parameters()}
    for form in FORMS[1:]:
        for name, gradient in gradients[FORMS[0]].items():
            assert_close(gradients[form][name], gradient, tolerance=1e-4)


def test_convolution_is_causal_with_the_newest_input_on_the_last_tap():
    mixer = build()
    kernel, start = mixer.options.d_conv, 5
    impulse = torch.zeros(1, 12, mixer.d_inner)
    impulse[0, start] = 1.0
    with torch.no_grad():
        response = mixer.conv(impulse)[0] - mixer.conv.bias  # (T, D)
    weight = mixer.conv.weight[:, 0]  # (D, kernel)
    assert response[:start].abs().max() == 0
    assert response[start + kernel :].abs().max() == 0
    for lag in range(kernel):
        torch.testing.assert_close(response[start + lag], weight[:, kernel - 1 - lag])


def test_streaming_state_holds_the_last_inputs_of_the_convolution():
    mixer, x = build(), inputs(9)
    state = mixer.init_state(BATCH, x.device, x.dtype)
    with torch.no_grad():
        for t in range(x.shape[1]):
            _, state = mixer.step(x[:, t], state)
        conv_inputs = mixer.in_proj(x)[..., : mixer.d_inner]  # u before the convolution
    window, h = state
    assert window.shape == (BATCH, mixer.d_inner, mixer.options.d_conv - 1)
    assert h.shape == (BATCH, mixer.d_inner, mixer.options.d_state)
    torch.testing.assert_close(window, conv_inputs[:, -3:].transpose(1, 2))


def test_A_is_negative_and_discrete_decays_lie_strictly_between_0_and_1():
    mixer = Mamba(WIDTH, 4)
    A = -torch.exp(mixer.A_log)
    assert (A < 0).all()
    torch.testing.assert_close(A, -torch.arange(1.0, 17.0).expand(mixer.d_inner, 16))  # S4D-real
    with torch.no_grad():
        u = F.silu(torch.randn(BATCH, 50, mixer.d_inner))
        delta, _, _ = mixer._selection(u)
        decay = mixer._decay(delta)
    assert ((decay > 0) & (decay < 1)).all()


def test_dt_init_is_log_uniform_between_1e_3_and_1e_1_and_survives_the_generic_init():
    mixer = Mamba(256, 4)  # D = 512 channels
    torch.nn.init.zeros_(mixer.dt_proj.bias)  # what the backbone's generic init does
    mixer.reset_special_parameters()
    dt = F.softplus(mixer.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    log_dt = dt.log()
    # log-uniform: mean near the midpoint of [ln 1e-3, ln 1e-1], both ends reached
    assert abs(log_dt.mean().item() - math.log(1e-2)) < 0.3
    assert dt.min() < 2e-3 and dt.max() > 5e-2
    torch.testing.assert_close(mixer.skip.detach(), torch.ones(512))


@pytest.mark.parametrize("form", FORMS)
def test_bfloat16_forward_runs_and_stays_near_float32(form):
    mixer, x = build(form=form, chunk_size=8), inputs(20)
    with torch.no_grad():
        expected = mixer(x)
        output = mixer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert output.dtype == torch.bfloat16 and torch.isfinite(output).all()
    assert_close(output.float(), expected, tolerance=5e-2)


def test_512_steps_with_strong_decays_stay_finite_and_equal_across_forms():
    x = inputs(512, batch=1)
    outputs = {}
    with torch.no_grad():
        for form, chunk in [("parallel", 64), ("chunked", 64), ("chunked", 16), ("recurrent", 64)]:
            mixer = strong_decays(build(form=form, chunk_size=chunk, d_state=8))
            outputs[form, chunk] = mixer(x)
        expected = naive_mamba(mixer, x)
    for output in outputs.values():
        assert torch.isfinite(output).all()
        assert_close(output, expected, tolerance=1e-5)


def test_options_dt_rank_state_size_and_clear_errors():
    assert Mamba(WIDTH, 4).dt_rank == 2  # ceil(32 / 16)
    assert Mamba(40, 4).dt_rank == 3
    mixer = build("mamba(d_state=8, d_conv=3, expand=3)")
    assert mixer.state_size(1) == mixer.state_size(100) == 3 * WIDTH * (8 + 3 - 1)
    assert Mamba.width_multiple(4, Mamba.Options()) == 1
    with pytest.raises(ValueError, match="mixer 'mamba\\(form=scan\\)': form"):
        resolve_mixer("mamba(form=scan)")
    with pytest.raises(ValueError, match="d_state"):
        resolve_mixer("mamba(d_state=0)")
