"""linear_attention, linear_self_attention, retention and gla against their papers' equations,
written here as plain loops; plus decay values, option errors and bfloat16."""

from __future__ import annotations

import math

import pytest
import torch

from iclab.models.mixers import resolve_mixer
from iclab.models.mixers.linear_attention import (
    GatedLinearAttention,
    LinearAttention,
    LinearSelfAttention,
    Retention,
    decayed_linear_attention,
)

FORMS = ("parallel", "chunked", "recurrent")
WIDTH, HEADS = 32, 4


def naive_decayed_linear_attention(q, k, v, log_decay):
    """o_t = Σ_{s≤t} (Π_{s<r≤t} exp g_r)(q_t·k_s) v_s, summed backwards from s = t, in float64."""
    batch, heads, length, _ = q.shape
    out = torch.zeros(batch, heads, length, v.shape[-1], dtype=torch.float64)
    for t in range(length):
        decay = torch.ones(batch, heads, dtype=torch.float64)
        for s in range(t, -1, -1):
            weight = decay * (q[:, :, t] * k[:, :, s]).sum(-1)  # (B, H)
            out[:, :, t] += weight[..., None] * v[:, :, s]
            if log_decay is not None:
                decay = decay * log_decay[:, :, s].exp()
    return out


def random_heads(length: int, seed: int = 0, batch: int = 2, heads: int = 3):
    generator = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, batch, heads, length, 5, generator=generator, dtype=torch.float64)
    v = torch.randn(batch, heads, length, 4, generator=generator, dtype=torch.float64)
    log_decay = -torch.rand(batch, heads, length, generator=generator, dtype=torch.float64)
    return q, k, v, log_decay


def build(spec: str, seed: int = 0, **overrides):
    """The mixer a spec names, weight matrices at scale 1/sqrt(fan-in) so outputs are O(1)."""
    cls, options = resolve_mixer(spec)
    options = options.model_copy(update={"short_conv": 0, **overrides})  # the equations' mixers
    torch.manual_seed(seed)
    mixer = cls(WIDTH, HEADS, options)
    with torch.no_grad():
        for parameter in mixer.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, parameter.shape[1] ** -0.5)
    return mixer.eval()


def inputs(length: int, seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, length, WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("decayed", [False, True])
@pytest.mark.parametrize("length", [1, 8, 17, 37])
def test_every_form_matches_the_per_step_equations(form, decayed, length):
    q, k, v, log_decay = random_heads(length)
    log_decay = log_decay if decayed else None
    expected = naive_decayed_linear_attention(q, k, v, log_decay)
    actual = decayed_linear_attention(q, k, v, log_decay, form=form, chunk_size=8)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)  # float64


@pytest.mark.parametrize("form", FORMS)
def test_strong_decay_neither_overflows_nor_forgets_the_current_token(form):
    """With g = −50 per step exp(G_t) underflows and exp(−G_s) overflows within 20 steps; the
    output is then (q_t·k_t) v_t alone. Float32, tolerance 1e-5."""
    q, k, v, _ = (x.float() for x in random_heads(300, seed=3))
    log_decay = torch.full(q.shape[:-1], -50.0)
    out = decayed_linear_attention(q, k, v, log_decay, form=form, chunk_size=16)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, (q * k).sum(-1, keepdim=True) * v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
def test_normalized_linear_attention_averages_values_with_weights_phi_q_dot_phi_k(
    form, feature_map
):
    """Katharopoulos et al. eq. 5: o_t = Σ_s φ(q_t)·φ(k_s) v_s / Σ_s φ(q_t)·φ(k_s)."""
    mixer = build(f"linear_attention(feature_map={feature_map})", form=form, chunk_size=8)
    x = inputs(37)
    with torch.no_grad():
        q, k, v = mixer.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.unflatten(-1, (HEADS, -1)).transpose(1, 2) for z in (q, k, v))
        phi = {"elu": lambda z: torch.nn.functional.elu(z) + 1, "relu": torch.relu}[feature_map]
        weights = (phi(q) @ phi(k).transpose(-1, -2)).tril()  # (B, H, T, T)
        mixed = (weights @ v) / (weights.sum(-1, keepdim=True) + mixer.eps)
        expected = mixer.proj(mixed.transpose(1, 2).flatten(2))
        torch.testing.assert_close(mixer(x), expected, rtol=1e-5, atol=1e-5)


def test_normalizer_adds_one_column_per_head_to_the_state():
    plain, normalized = build("linear_attention(normalize=false)"), build("linear_attention")
    assert plain.state_size(10) == WIDTH * WIDTH // HEADS
    assert normalized.state_size(10) == WIDTH * WIDTH // HEADS + WIDTH


def test_identity_features_with_normalization_is_a_clear_error():
    with pytest.raises(ValueError, match="feature_map=identity with normalize=true"):
        resolve_mixer("linear_attention(feature_map=identity)")
    resolve_mixer("linear_attention(feature_map=identity, normalize=false)")  # allowed


def test_linear_self_attention_has_no_biases_and_no_feature_map_options():
    mixer = LinearSelfAttention(WIDTH, HEADS)
    assert all(name.endswith("weight") for name, _ in mixer.named_parameters())
    with pytest.raises(ValueError, match="feature_map"):
        resolve_mixer("linear_self_attention(feature_map=elu)")


@pytest.mark.parametrize("form", FORMS)
def test_linear_self_attention_can_be_one_gradient_descent_step(form):
    """von Oswald et al. 2023, Prop. 1: tokens (x_i, y_i) and query (x, 0); with W_K = W_Q
    reading x, W_V reading y and P = η I, the query's last output is η (Σ_i y_i x_i)·x, the
    prediction after one step of size η from w = 0 on ½ Σ_i (y_i − w·x_i)²."""
    dim, n_context, lr = 3, 10, 0.1
    mixer = LinearSelfAttention(dim + 1, 1, LinearSelfAttention.Options(form=form, chunk_size=4))
    reads_x = torch.diag(torch.tensor([1.0] * dim + [0.0]))
    reads_y = torch.diag(torch.tensor([0.0] * dim + [1.0]))
    with torch.no_grad():
        mixer.qkv.weight.copy_(torch.cat([reads_x, reads_x, reads_y]))
        mixer.proj.weight.copy_(lr * torch.eye(dim + 1))
    generator = torch.Generator().manual_seed(0)
    xs = torch.randn(n_context + 1, dim, generator=generator)
    ys = xs[:n_context] @ torch.randn(dim, generator=generator)
    tokens = torch.cat([xs, torch.cat([ys, torch.zeros(1)])[:, None]], dim=1)[None]
    w_after_one_step = lr * (ys[:, None] * xs[:n_context]).sum(0)
    with torch.no_grad():
        prediction = mixer(tokens)[0, -1, -1]
    torch.testing.assert_close(prediction, w_after_one_step @ xs[-1], rtol=1e-5, atol=1e-6)


def test_retention_decays_are_one_minus_two_to_the_minus_five_minus_h():
    mixer = Retention(WIDTH, HEADS, Retention.Options(short_conv=0))
    decays = mixer.log_decay(inputs(5)).exp()  # (B, H, T)
    expected = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(HEADS)])
    torch.testing.assert_close(decays, expected[None, :, None].expand_as(decays))
    assert dict(mixer.named_parameters()).keys() == {
        "qkv.weight",
        "head_norm.weight",
        "head_norm.bias",
        "gate.weight",
        "proj.weight",
    }


def test_gla_decays_lie_in_zero_one_and_depend_on_the_input():
    mixer = build("gla")
    decays = mixer.log_decay(inputs(50)).exp()
    assert decays.shape == (2, HEADS, 50)
    assert ((decays > 0) & (decays < 1)).all()
    assert decays.std(dim=-1).min() > 1e-4  # varies along the sequence
    assert not torch.allclose(decays, mixer.log_decay(inputs(50, seed=2)).exp())


def test_gla_decays_start_at_retention_decays():
    """reset_special_parameters sets σ(b_h)^(1/16) = γ_h, so with zero gate weights the data
    decays are retention's."""
    mixer = GatedLinearAttention(WIDTH, HEADS)
    with torch.no_grad():
        mixer.decay_gate.weight.zero_()
    torch.testing.assert_close(
        mixer.log_decay(inputs(3)), Retention(WIDTH, HEADS).log_decay(inputs(3))
    )


def test_retention_is_gla_with_fixed_decays():
    assert issubclass(Retention, GatedLinearAttention)
    assert resolve_mixer("retention")[1].decay == "fixed"
    assert resolve_mixer("gla")[1].decay == "data"
    x = inputs(20)
    with torch.no_grad():
        torch.testing.assert_close(build("retention")(x), build("gla(decay=fixed)")(x))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("spec", ["linear_attention", "linear_self_attention", "retention", "gla"])
def test_bfloat16_forward_is_close_to_float32(spec, form):
    """Tolerance: 5% of the output scale (bfloat16 keeps 8 significant bits)."""
    mixer = build(spec, form=form, chunk_size=16)
    x = inputs(40)
    with torch.no_grad():
        expected = mixer(x)
        actual = mixer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert actual.dtype == torch.bfloat16
    error = (actual.float() - expected).abs().max().item()
    assert error <= 0.05 * expected.abs().max().item()


def test_step_leaves_the_given_state_untouched():
    for spec in ("linear_attention", "gla"):
        mixer = build(spec)
        state = mixer.init_state(2, torch.device("cpu"), torch.float32)
        _, state = mixer.step(inputs(1)[:, 0], state)
        before = state[0].clone()
        mixer.step(inputs(1, seed=5)[:, 0], state)
        assert torch.equal(state[0], before)


def test_mixers_are_multi_head_with_one_fused_qkv_map():
    for cls in (LinearAttention, LinearSelfAttention, Retention, GatedLinearAttention):
        mixer = cls(WIDTH, HEADS, cls.Options(short_conv=0))
        assert mixer.qkv.weight.shape == (3 * WIDTH, WIDTH)
        assert mixer.state_size(1) == HEADS * (WIDTH // HEADS) * mixer.value_dim
        assert not math.isnan(mixer(inputs(3)).sum().item())
