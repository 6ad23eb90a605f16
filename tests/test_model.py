"""The transformer in-context learner: causal, Garg et al.'s codec, clear length limits."""

from __future__ import annotations

import pytest
import torch

from conftest import model_for
from iclab.config import ModelConfig, TaskConfig
from iclab.episode import Episode
from iclab.kinds import KINDS
from iclab.models.mixers import MIXERS
from iclab.models.model import count_params


def small_model(n_dims=3, n_points=8, tokens="interleaved"):
    torch.manual_seed(0)
    mixer = "softmax(positions=none)" if tokens == "set" else "softmax"  # set prompts need it
    return model_for(
        ModelConfig(mixer=mixer, n_layers=2, d_model=32, n_heads=4, tokens=tokens),
        TaskConfig(n_dims=n_dims, n_points=n_points),
    )


def random_episode(batch=4, n_points=8, n_dims=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return Episode(
        inputs=torch.randn(batch, n_points, n_dims, generator=generator),
        targets=torch.randn(batch, n_points, generator=generator),
    )


@pytest.mark.parametrize("tokens", KINDS["regression"].codec_options)
def test_prediction_at_i_ignores_target_i_and_everything_later(tokens):
    model, episode = small_model(tokens=tokens), random_episode()
    before = model.predict(episode)
    for i in range(episode.n_points):
        changed = Episode(episode.inputs.clone(), episode.targets.clone())
        changed.targets[:, i:] += 10.0
        changed.inputs[:, i + 1 :] += 10.0
        after = model.predict(changed)
        torch.testing.assert_close(after[:, : i + 1], before[:, : i + 1], rtol=0, atol=1e-5)
        if i + 1 < episode.n_points:
            assert not torch.allclose(after[:, i + 1 :], before[:, i + 1 :])


def test_codec_interleaves_x_then_y_with_y_in_the_first_coordinate():
    model, episode = small_model(), random_episode(batch=1, n_points=2)
    read_in = model.codec.read_in
    tokens = model.codec.encode(episode.inputs, episode.targets)
    expected_y = torch.zeros(3)
    expected_y[0] = episode.targets[0, 0]
    torch.testing.assert_close(tokens[0, 0], read_in(episode.inputs[0, 0]))
    torch.testing.assert_close(tokens[0, 1], read_in(expected_y))
    torch.testing.assert_close(tokens[0, 2], read_in(episode.inputs[0, 1]))


def test_lagged_tokens_pair_each_input_with_the_previous_target():
    model, episode = small_model(tokens="lagged"), random_episode(batch=1, n_points=3)
    codec = model.codec
    tokens = codec.encode(episode.inputs, episode.targets)
    assert tokens.shape == (1, 3, 32) and codec.tokens_per_example == 1
    first = torch.cat([episode.inputs[0, 0], torch.zeros(1)])
    third = torch.cat([episode.inputs[0, 2], episode.targets[0, 1:2]])
    torch.testing.assert_close(tokens[0, 0], codec.read_in(first))
    torch.testing.assert_close(tokens[0, 2], codec.read_in(third))


def test_bfloat16_attention_on_cpu_matches_float32():
    """Under bf16 autocast the CPU takes the explicit attention path (matmuls and softmax in
    bf16, the softmax summing in float32); it computes what the fused float32 kernel does, to
    bf16's precision."""
    model, episode = small_model(), random_episode()
    exact = model.predict(episode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model.predict(episode).float()
    torch.testing.assert_close(fast, exact, rtol=0.05, atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(episode).float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


def test_bfloat16_attention_on_cpu_saves_its_weights_once_in_bfloat16():
    """Backward keeps the (B, H, T, T) softmax weights as one bfloat16 tensor, not a float32
    copy beside it: about 10 MB of the vs-reference config's peak memory."""
    attention = small_model().backbone.blocks[0].mixer
    saved = []
    keep = torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t)
    with keep, torch.autocast("cpu", dtype=torch.bfloat16):
        attention(torch.randn(4, 16, 32))
    square = [t for t in saved if t.shape[-2:] == (16, 16)]  # (B, H, T, T): the weights
    assert square and {t.dtype for t in square} == {torch.bfloat16}
    assert len({t.untyped_storage().data_ptr() for t in square}) == 1


def test_output_has_one_prediction_per_example():
    assert small_model().predict(random_episode()).shape == (4, 8)


def test_longer_prompt_than_learned_positions_is_a_clear_error():
    model = small_model(n_points=8)
    with pytest.raises(ValueError, match="learned position table covers 8 examples"):
        model.predict(random_episode(n_points=9))


def test_parameter_count_matches_gpt2_formula():
    model = small_model()
    d, e, layers, positions = 3, 32, 2, 16
    per_block = (3 * e * e + 3 * e) + (e * e + e) + (4 * e * e + 4 * e) + (4 * e * e + e) + 4 * e
    expected = (d * e + e) + (e + 1) + positions * e + layers * per_block + 2 * e
    assert model.n_params() == expected


@pytest.mark.parametrize("init_std", [0.02, 0.002])
def test_init_std_sets_the_spread_of_linear_maps_and_residual_projections(init_std):
    torch.manual_seed(0)
    layers, width = 2, 32
    config = ModelConfig(n_layers=layers, d_model=width, n_heads=4, init_std=init_std)
    model = model_for(config, TaskConfig(n_dims=3, n_points=8))
    block = model.backbone.blocks[0]
    for weights, std in [
        (block.mixer.qkv.weight, init_std),
        (block.mixer.proj.weight, init_std / (2 * layers) ** 0.5),
    ]:
        # the sample std of n normal draws is within 4 standard errors (std / sqrt(2n)) of std
        tolerance = 4 * std / (2 * weights.numel()) ** 0.5
        assert abs(weights.std().item() - std) < tolerance
    assert torch.all(block.mixer.qkv.bias == 0)


STACKS = [[name] * 4 for name, _ in MIXERS] + [["mamba", "mamba", "softmax", "mamba"]]


@pytest.mark.parametrize("layers", STACKS, ids=", ".join)
def test_target_params_lands_every_architecture_within_five_percent(layers):
    task = TaskConfig(n_dims=5, n_points=21)
    config = ModelConfig(layers=layers, n_heads=4, target_params=200_000)
    model = model_for(config, task)
    assert abs(model.n_params() - 200_000) <= 0.05 * 200_000
    width = model.backbone.blocks[0].mixer.d_model
    assert width % config.width_multiple() == 0
    assert count_params(config, task.io(), task.n_points, width) == model.n_params()


def test_target_params_out_of_reach_is_a_clear_error():
    config = ModelConfig(n_layers=12, n_heads=8, target_params=5_000)
    with pytest.raises(ValueError, match="target_params=5,000: the nearest width d_model=8"):
        model_for(config, TaskConfig(n_dims=5, n_points=21))


@pytest.mark.parametrize(
    "layers", ["softmax", "softmax(positions=rotary)", "lstm, softmax(positions=alibi), gla"]
)
def test_streaming_prediction_equals_the_full_forward_pass(layers):
    torch.manual_seed(0)
    model = model_for(ModelConfig(layers=layers, d_model=32, n_heads=4), TaskConfig(n_dims=3))
    episode = random_episode(n_points=11)
    torch.testing.assert_close(
        model.predict(episode, streaming=True), model.predict(episode), rtol=1e-5, atol=1e-5
    )


def test_attention_only_blocks_have_no_mlp_and_no_norm():
    model = model_for(
        ModelConfig(
            mixer="linear_self_attention(positions=none)",
            n_layers=1,
            d_model=8,
            n_heads=1,
            mlp_ratio=0,
            norm="none",
        ),
        TaskConfig(n_dims=3, n_points=8),
    )
    block = model.backbone.blocks[0]
    assert block.mlp is None and not any(
        isinstance(module, torch.nn.LayerNorm) for module in model.modules()
    )
    assert model.backbone.position is None
    assert model.n_params() == (3 * 8 + 8) + (8 + 1) + 3 * 8 * 8 + 8 * 8  # no mixer biases


@pytest.mark.parametrize("mixer", ["softmax(positions=rotary)", "softmax(positions=none)", "lstm"])
def test_mixers_without_a_position_table_take_longer_prompts_than_trained(mixer):
    torch.manual_seed(0)
    model = model_for(
        ModelConfig(mixer=mixer, n_layers=2, d_model=32, n_heads=4),
        TaskConfig(n_dims=3, n_points=8),
    )
    assert model.backbone.position is None
    assert model.predict(random_episode(n_points=20)).shape == (4, 20)


@pytest.mark.parametrize("positions", ["learned", "rotary", "alibi", "none"])
def test_attention_weights_are_the_ones_the_forward_pass_uses(positions):
    from iclab.models.mixers.attention import CausalSelfAttention, SoftmaxOptions

    torch.manual_seed(0)
    mixer = CausalSelfAttention(32, 4, SoftmaxOptions(positions=positions)).eval()
    x = torch.randn(2, 9, 32)
    weights = mixer.attention_weights(x)  # (B, H, T, T)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 9), atol=1e-6)
    assert (weights.triu(1) == 0).all()  # causal
    _, _, v = mixer._heads(x)
    assert torch.allclose(mixer._merge(weights @ v), mixer(x), atol=1e-5)


def test_hidden_states_read_out_at_the_last_layer_is_the_prediction():
    from iclab.config import ModelConfig, TaskConfig

    task = TaskConfig(name="linear_regression", n_dims=3, n_points=6)
    model = model_for(ModelConfig(mixer="softmax", n_layers=3, d_model=32, n_heads=2), task)
    episode = task.build().sample(4, 6, torch.Generator().manual_seed(0))
    hidden = model.hidden_states(episode)
    assert len(hidden) == 4 and hidden[0].shape == (4, 12, 32)
    assert torch.allclose(model.read_out(hidden[-1]), model.predict(episode), atol=1e-6)
    maps = model.attention_maps(episode)
    assert sorted(maps) == [0, 1, 2] and maps[0].shape == (4, 2, 12, 12)


def lsa_on_paired_tokens(n_dims: int):
    from iclab.config import ModelConfig, TaskConfig

    task = TaskConfig(name="linear_regression", n_dims=n_dims, n_points=8)
    config = ModelConfig(
        mixer="linear_self_attention",
        n_layers=1,
        d_model=n_dims + 1,
        n_heads=1,
        mlp_ratio=0,
        norm="none",
        tokens="paired",
    )
    return model_for(config, task), task


def test_one_lsa_layer_on_paired_tokens_can_be_one_gradient_descent_step():
    """von Oswald et al. 2023, Prop. 1, through the whole model: identity read-in, W_K = W_Q
    reading x, W_V reading y, P = η I, read-out of y: the prediction at every query is one GD
    step of size η from w = 0 on ½ Σ_{j<i} (y_j − w·x_j)², i.e. η Σ_{j<i} y_j x_j · x_i."""
    dim, lr = 7, 0.1  # d_model = d + 1 = 8, the smallest width a model takes
    model, task = lsa_on_paired_tokens(dim)
    reads_x = torch.diag(torch.tensor([1.0] * dim + [0.0]))
    reads_y = torch.diag(torch.tensor([0.0] * dim + [1.0]))
    with torch.no_grad():
        model.codec.read_in.weight.copy_(torch.eye(dim + 1))
        model.codec.read_in.bias.zero_()
        mixer = model.backbone.blocks[0].mixer
        mixer.qkv.weight.copy_(torch.cat([reads_x, reads_x, reads_y]))
        mixer.proj.weight.copy_(lr * torch.eye(dim + 1))
        model.codec.read_out.weight.copy_(reads_y[-1:])
        model.codec.read_out.bias.zero_()
    episode = task.build().sample(4, 8, torch.Generator().manual_seed(0))
    x, y = episode.inputs, episode.targets
    w_before = lr * torch.cumsum(y[..., None] * x, dim=1) - lr * y[..., None] * x  # Σ_{j<i}
    expected = (w_before * x).sum(-1)
    torch.testing.assert_close(model.predict(episode), expected, rtol=1e-5, atol=1e-6)
