"""DeltaNet against the delta rule written out by hand: every form equals a plain loop over
tokens, the update is one gradient step on ½‖S k − v‖², and a β = 1 write is recalled exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iclab.models.mixers import resolve_mixer
from iclab.models.mixers.deltanet import DeltaNet, delta_rule_chunked, delta_rule_step

WIDTH, HEADS, BATCH = 32, 4, 2
HEAD_DIM = WIDTH // HEADS


def naive_delta_rule(q, k, v, beta):
    """Schlag et al. 2021, one sequence, one head, one token at a time:
    S_t = S_{t−1} + β_t (v_t − S_{t−1} k_t) k_tᵀ, o_t = S_t q_t. Inputs (B, H, T, ·)."""
    batch, heads, length, key_dim = k.shape
    outputs = torch.zeros(batch, heads, length, v.shape[-1], dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            memory = torch.zeros(v.shape[-1], key_dim, dtype=torch.float64)
            for t in range(length):
                q_t, k_t, v_t = (x[b, h, t].double() for x in (q, k, v))
                memory = memory + beta[b, h, t].double() * torch.outer(v_t - memory @ k_t, k_t)
                outputs[b, h, t] = memory @ q_t
    return outputs


def random_heads(length, seed=0):
    """q, k unit vectors, v of order one, β in (0, 1): (B, H, T, ·)."""
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(BATCH, HEADS, length, HEAD_DIM, generator=generator) for _ in range(3))
    beta = torch.rand(BATCH, HEADS, length, generator=generator)
    return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, beta


def build(form="chunked", chunk_size=16, seed=0):
    """A DeltaNet with weights at scale 1/sqrt(fan-in), so outputs are of order one."""
    _, options = resolve_mixer(f"deltanet(form={form}, chunk_size={chunk_size})")
    torch.manual_seed(seed)
    mixer = DeltaNet(WIDTH, HEADS, options)
    with torch.no_grad():
        for parameter in mixer.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 1.0 / math.sqrt(parameter.shape[1]))
    return mixer.eval()


def relative_error(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize(("length", "chunk_size"), [(1, 4), (37, 8), (64, 16), (100, 100)])
def test_chunked_wy_form_equals_the_token_by_token_delta_rule(length, chunk_size):
    q, k, v, beta = random_heads(length)
    output, _ = delta_rule_chunked(q, k, v, beta, chunk_size)
    assert output.shape == v.shape
    assert relative_error(output, naive_delta_rule(q, k, v, beta)) < 1e-5


def test_chunked_form_carries_the_final_state_of_the_recurrence():
    q, k, v, beta = random_heads(45, seed=3)
    _, chunked_state = delta_rule_chunked(q, k, v, beta, chunk_size=8)
    memory = torch.zeros(BATCH, HEADS, HEAD_DIM, HEAD_DIM)
    for t in range(45):
        _, memory = delta_rule_step(memory, q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t])
    assert relative_error(chunked_state, memory) < 1e-5


@pytest.mark.parametrize("form", ["parallel", "chunked", "recurrent"])
def test_every_form_of_the_mixer_equals_the_equations_on_its_own_weights(form):
    """The whole mixer: SiLU + L2 on q, k; β = sigmoid(W_β x); delta rule; RMSNorm; proj."""
    mixer = build(form)
    x = torch.randn(BATCH, 37, WIDTH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        q, k, v = (x @ weight.T for weight in mixer.qkv.weight.chunk(3, dim=0))  # (B, T, E)
        q, k, v = (t.view(BATCH, 37, HEADS, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
        q, k = (F.silu(t) / F.silu(t).norm(dim=-1, keepdim=True) for t in (q, k))
        beta = torch.sigmoid(x @ mixer.beta.weight.T).transpose(1, 2)  # (B, H, T)
        o = naive_delta_rule(q, k, v, beta).float()
        o = o / o.square().mean(-1, keepdim=True).add(1e-5).sqrt() * mixer.norm.weight
        expected = mixer.proj(o.transpose(1, 2).reshape(BATCH, 37, WIDTH))
        assert relative_error(mixer(x), expected) < 1e-5


def test_delta_update_is_one_gradient_step_on_the_squared_recall_error():
    """S_t = S − β ∇_S ½‖S k − v‖²: the write is online regression of v on k."""
    generator = torch.Generator().manual_seed(2)
    memory = torch.randn(3, 5, 6, generator=generator, dtype=torch.float64)  # (·, Dv, Dk)
    q, k = (
        F.normalize(torch.randn(3, 6, generator=generator, dtype=torch.float64), dim=-1)
        for _ in range(2)
    )
    v = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    beta = torch.rand(3, generator=generator, dtype=torch.float64)

    leaf = memory.clone().requires_grad_()
    loss = 0.5 * ((leaf @ k.unsqueeze(-1)).squeeze(-1) - v).square().sum()
    (gradient,) = torch.autograd.grad(loss, leaf)
    _, updated = delta_rule_step(memory, q, k, v, beta)
    torch.testing.assert_close(updated, memory - beta[:, None, None] * gradient, rtol=0, atol=1e-12)


def test_with_beta_one_a_written_value_is_recalled_exactly_and_overwrites_the_old_one():
    """Unit k, β = 1: S k = v after the write; a second write under the same key replaces the
    first (linear attention's additive write would return their sum)."""
    generator = torch.Generator().manual_seed(4)
    k = F.normalize(torch.randn(2, HEAD_DIM, generator=generator), dim=-1)
    first, second = (torch.randn(2, HEAD_DIM, generator=generator) for _ in range(2))
    memory = torch.randn(2, HEAD_DIM, HEAD_DIM, generator=generator)  # whatever it held before
    ones = torch.ones(2)
    recalled, memory = delta_rule_step(memory, k, k, first, ones)  # query with the key itself
    torch.testing.assert_close(recalled, first, rtol=0, atol=1e-5)
    recalled, memory = delta_rule_step(memory, k, k, second, ones)
    torch.testing.assert_close(recalled, second, rtol=0, atol=1e-5)


def test_step_leaves_the_state_it_was_given_unchanged():
    mixer = build()
    state = mixer.init_state(BATCH, torch.device("cpu"), torch.float32)
    before = state[0].clone()
    mixer.step(torch.randn(BATCH, WIDTH), state)
    assert torch.equal(state[0], before)


def test_chunked_gradients_equal_recurrent_gradients():
    x = torch.randn(BATCH, 21, WIDTH, generator=torch.Generator().manual_seed(5))
    gradients = {}
    for form in ("chunked", "recurrent"):
        mixer = build(form, chunk_size=8)
        mixer(x).square().sum().backward()
        gradients[form] = {name: p.grad for name, p in mixer.named_parameters()}
    for name, gradient in gradients["recurrent"].items():
        assert relative_error(gradients["chunked"][name], gradient) < 1e-4, name


@pytest.mark.parametrize("form", ["parallel", "chunked", "recurrent"])
def test_bfloat16_forward_runs_and_stays_close_to_float32(form):
    mixer = build(form)
    x = torch.randn(BATCH, 40, WIDTH, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = mixer(x)
        output = mixer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert output.dtype == torch.bfloat16
    assert torch.isfinite(output).all()
    assert relative_error(output.float(), expected) < 5e-2


def test_state_size_is_one_dv_by_dk_matrix_per_head():
    assert build().state_size(100) == HEADS * HEAD_DIM * HEAD_DIM == WIDTH**2 // HEADS


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match=r"deltanet\(form=fast\).*form"):
        resolve_mixer("deltanet(form=fast)")
    with pytest.raises(ValueError, match="chunk_size"):
        resolve_mixer("deltanet(chunk_size=0)")
