"""The contract every sequence mixer keeps: causal, all forms equal, streaming equals the full
forward pass, honest state sizes, gradients reach every parameter, documented options."""

from __future__ import annotations

import math

import pytest
import torch

from iclab.models.mixers import MIXERS, resolve_mixer
from iclab.models.mixers.base import balanced_chunks, state_numel

WIDTH, HEADS, BATCH = 32, 4, 2

# Every registered mixer with its defaults, plus the option settings that change the computation.
VARIANTS = [name for name, _ in MIXERS] + [
    "softmax(positions=rotary)",
    "softmax(positions=alibi)",
    "softmax(positions=none)",
    "softmax(short_conv=2)",
    "softmax(short_conv=3, positions=rotary)",
    "linear_attention(feature_map=relu)",
    "linear_attention(feature_map=identity, normalize=false)",
    "linear_attention(normalize=false)",
    "deltanet(chunk_size=7)",
    "mamba(d_conv=1, expand=1, dt_rank=3, d_state=5)",
    "retention",
    "gla(decay=fixed)",
    "retention(short_conv=0)",
    "linear_attention(short_conv=2, positions=learned)",
    "linear_self_attention(short_conv=3)",
]


def build(spec: str, seed: int = 0, width: int = WIDTH, heads: int = HEADS, **overrides):
    """The mixer a spec names, with weight matrices drawn at scale 1/sqrt(fan-in) so that every
    output is of order one (the small training init would make any comparison pass)."""
    cls, options = resolve_mixer(spec)
    if overrides:
        options = options.model_copy(update=overrides)
    torch.manual_seed(seed)
    mixer = cls(width, heads, options)
    with torch.no_grad():
        for parameter in mixer.parameters():
            if parameter.dim() >= 2:
                fan_in = math.prod(parameter.shape[1:])
                parameter.normal_(0.0, 1.0 / math.sqrt(fan_in))
    return mixer.eval()


def inputs(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(BATCH, length, WIDTH, generator=torch.Generator().manual_seed(seed))


def assert_same(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Equal within ``tolerance`` relative to the outputs' scale (float32)."""
    scale = max(expected.abs().max().item(), 1.0)
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * scale, f"max difference {error:.3g} at output scale {scale:.3g}"


def stream(mixer, x: torch.Tensor):
    state = mixer.init_state(x.shape[0], x.device, x.dtype)
    outputs = []
    for t in range(x.shape[1]):
        output, state = mixer.step(x[:, t], state)
        outputs.append(output)
    return torch.stack(outputs, dim=1), state


@pytest.mark.parametrize("spec", VARIANTS)
def test_output_at_t_ignores_every_later_input(spec):
    mixer, x = build(spec), inputs(24)
    with torch.no_grad():
        before = mixer(x)
        for t in (0, 7, 16):
            changed = x.clone()
            changed[:, t + 1 :] += torch.randn_like(changed[:, t + 1 :])
            after = mixer(changed)
            assert_same(after[:, : t + 1], before[:, : t + 1])
            assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :], atol=1e-4)


MULTI_FORM = [spec for spec in VARIANTS if len(resolve_mixer(spec)[0].forms) > 1]


@pytest.mark.parametrize("spec", MULTI_FORM)
@pytest.mark.parametrize("length", [1, 37, 512])
def test_parallel_chunked_and_recurrent_forms_agree(spec, length):
    forms = resolve_mixer(spec)[0].forms
    x = inputs(length)
    with torch.no_grad():
        outputs = [build(spec, form=form, chunk_size=16)(x) for form in forms]
    for output in outputs:
        assert output.shape == x.shape
        assert_same(output, outputs[0])


@pytest.mark.parametrize("spec", VARIANTS)
def test_streaming_step_by_step_equals_the_full_forward_pass(spec):
    mixer, x = build(spec), inputs(29)
    with torch.no_grad():
        streamed, _ = stream(mixer, x)
        assert_same(streamed, mixer(x))


@pytest.mark.parametrize("spec", VARIANTS)
def test_state_size_counts_the_floats_carried_between_steps(spec):
    mixer = build(spec)
    for length in (1, 9):
        with torch.no_grad():
            _, state = stream(mixer, inputs(length))
        assert state_numel(state) == BATCH * mixer.state_size(length)


@pytest.mark.parametrize("spec", VARIANTS)
def test_every_parameter_gets_a_gradient(spec):
    mixer = build(spec).train()
    mixer(inputs(12)).square().sum().backward()
    for name, parameter in mixer.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", MIXERS.names())
def test_mixer_documents_itself(name):
    cls = MIXERS.get(name)
    assert cls.__doc__ and cls.paper and cls.state_formula
    for field, info in cls.Options.model_fields.items():
        assert info.description, f"{name} option {field} has no description"
    if len(cls.forms) > 1:
        assert set(cls.Options.model_fields) >= {"form", "chunk_size"}


def test_unknown_option_or_value_is_a_clear_error():
    with pytest.raises(ValueError, match="mixer 'softmax\\(positions=sinusoid\\)': positions"):
        resolve_mixer("softmax(positions=sinusoid)")
    with pytest.raises(ValueError, match="mixer 'softmax\\(window=3\\)': window"):
        resolve_mixer("softmax(window=3)")
    with pytest.raises(KeyError, match=r"unknown mixer 'transformer' \(registered: .*softmax"):
        resolve_mixer("transformer")


def test_readme_table_lists_every_mixer_with_its_state_formula():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    for name, cls in MIXERS:
        row = next((r for r in rows if r.split("|")[1].strip().startswith(f"`{name}`")), None)
        assert row is not None, f"README has no row for {name}"
        assert ", ".join(cls.forms) in row.split("|")[2], name
        assert cls.state_formula.split(" (")[0] in row.split("|")[3], name


@pytest.mark.parametrize(
    ("length", "chunk_size", "expected"),
    [(82, 64, (2, 41)), (42, 64, (1, 42)), (64, 64, (1, 64)), (65, 64, (2, 33)), (17, 8, (3, 6))],
)
def test_balanced_chunks_are_as_few_as_the_chunk_size_allows_and_equal(
    length, chunk_size, expected
):
    assert balanced_chunks(length, chunk_size) == expected


def test_balanced_chunks_cover_the_sequence_with_less_than_one_step_of_padding_per_chunk():
    for length in range(1, 200):
        for chunk_size in (1, 7, 16, 64):
            n_chunks, size = balanced_chunks(length, chunk_size)
            assert size <= chunk_size and n_chunks == -(-length // chunk_size)
            assert 0 <= n_chunks * size - length < n_chunks
