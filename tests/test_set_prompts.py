"""Set-style prompts (model.tokens: set) and the tabular prior they are trained on."""

from __future__ import annotations

import math

import pytest
import torch

from iclab.config import ModelConfig
from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.kinds import TaskIO
from iclab.models.model import build_model
from iclab.seeding import generator_for
from iclab.tasks import make_task
from iclab.tasks.tabular import MECHANISMS, robust_scaling, standardize

IOS = {
    "regression": TaskIO("regression", 3),
    "classification": TaskIO("classification", 3, 4),
}


def set_model(kind: str, mixer: str = "softmax(positions=none)", tokens: str = "set"):
    torch.manual_seed(0)
    config = ModelConfig(mixer=mixer, n_layers=2, d_model=16, n_heads=2, tokens=tokens)
    return build_model(config, IOS[kind], 12)


def prompt(kind: str, batch: int, n_points: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, n_points, 3, generator=generator)
    if kind == "regression":
        return inputs, torch.randn(batch, n_points, generator=generator)
    return inputs, torch.randint(0, 4, (batch, n_points), generator=generator)


@pytest.mark.parametrize("kind", IOS)
def test_queries_answered_together_equal_queries_answered_alone(kind):
    model = set_model(kind)
    inputs, targets = prompt(kind, 2, 5)
    queries = torch.randn(2, 7, 3)
    together = model.predict_queries(inputs, targets, queries)
    alone = torch.stack(
        [model.predict_queries(inputs, targets, queries[:, j : j + 1])[:, 0] for j in range(7)], 1
    )
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    reversed_order = model.predict_queries(inputs, targets, queries.flip(1)).flip(1)
    torch.testing.assert_close(reversed_order, together, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", IOS)
def test_a_set_model_predicts_each_prefix_in_one_pass_and_streams_the_same(kind):
    """Prediction i of one forward pass equals query i answered from the first i examples;
    streaming (queries leave the state as it was) gives the same numbers."""
    model = set_model(kind)
    inputs, targets = prompt(kind, 2, 6)
    episode = Episode(inputs, targets, kind)
    full = model.predict(episode)
    for i in range(1, 6):
        alone = model.predict_queries(inputs[:, :i], targets[:, :i], inputs[:, i : i + 1])[:, 0]
        torch.testing.assert_close(full[:, i], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.predict(episode, streaming=True), full, rtol=0, atol=1e-5)


def test_queries_never_see_each_other_in_training_layout():
    """Changing query token i's input changes prediction i only (queries are private)."""
    model = set_model("regression")
    inputs, targets = prompt("regression", 1, 6)
    tokens = model.codec.encode(inputs, targets)
    visible = model.visible(tokens.shape[1], tokens.device)
    before = model.backbone(tokens, visible)
    changed = tokens.clone()
    changed[:, 4] += 5.0  # query token of example 2 (tokens q1 p1 q2 p2 …)
    after = model.backbone(changed, visible)
    differs = (after - before).abs().amax(-1)[0] > 1e-6
    assert differs.tolist() == [i == 4 for i in range(12)]


@pytest.mark.parametrize("kind", IOS)
def test_models_without_set_tokens_answer_queries_by_one_prompt_each(kind):
    model = set_model(kind, mixer="softmax", tokens="interleaved")
    inputs, targets = prompt(kind, 2, 5)
    queries = torch.randn(2, 3, 3)
    answers = model.predict_queries(inputs, targets, queries)
    for j in range(3):
        full_inputs = torch.cat((inputs, queries[:, j : j + 1]), 1)
        full_targets = torch.cat((targets, targets[:, :1]), 1)  # the placeholder is never read
        expected = model.predict(Episode(full_inputs, full_targets, kind))[:, -1]
        torch.testing.assert_close(answers[:, j], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mixer", ["softmax", "softmax(positions=rotary)", "linear_attention"])
def test_set_tokens_refuse_mixers_that_cannot_hide_queries_or_have_positions(mixer):
    with pytest.raises(ValueError, match=r"tokens=set needs .*softmax\(positions=none\)"):
        ModelConfig(mixer=mixer, n_heads=2, d_model=16, tokens="set")


# the tabular prior ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tabular_regression", "tabular_classification"])
def test_tables_are_standardized_padded_and_finite(name):
    task = make_task(name, 8)
    episode = task.sample(512, 64, generator_for(0, "tables"))
    x = episode.inputs
    assert x.shape == (512, 64, 8) and torch.isfinite(x).all()
    assert x.abs().max() <= task.options.clip
    # columns past a table's count are zero in every row (padding); within it almost every
    # column varies (a constant one, e.g. a ReLU node that never fires, is 0 as well)
    counts = episode.meta["n_features"]
    active = torch.arange(8) < counts[:, None]  # (B, d)
    used = (x != 0).any(1)
    assert not (used & ~active).any()
    assert used[active].double().mean() > 0.95
    assert counts.max() == 8 and counts.min() >= task.options.min_features
    # robust standardization: a used column's median is 0 and it is not constant (n = 64:
    # ties at the median are possible for categorical columns, so test on the typical column)
    median = x.median(1).values[used]
    assert median.abs().median() < 0.1


def test_regression_targets_have_mean_zero_and_variance_one_per_table():
    task = make_task("tabular_regression", 8)
    targets = task.sample(256, 64, generator_for(0, "tables")).targets
    torch.testing.assert_close(targets.mean(1), torch.zeros(256), atol=1e-5, rtol=0)
    torch.testing.assert_close(targets.std(1), torch.ones(256), atol=1e-4, rtol=0)
    assert task.target_scale == 1.0


def test_classification_tables_use_their_first_classes_with_every_count_drawn():
    task = make_task("tabular_classification", 8, {"n_classes": 5})
    episode = task.sample(2000, 64, generator_for(0, "tables"))
    classes = episode.meta["n_classes"]
    assert (episode.targets < classes[:, None]).all()
    # the class count is uniform on 2..5: each value's share within 4 standard errors of 1/4
    shares = torch.bincount(classes, minlength=6)[2:].double() / 2000
    assert (shares - 0.25).abs().max() < 4 * math.sqrt(0.25 * 0.75 / 2000)
    # class ids are arbitrary: class 0 is not always the lowest target quantile, so every id
    # is used about equally in 2-class tables
    two = classes == 2
    share_of_zero = (episode.targets[two] == 0).double().mean()
    assert abs(share_of_zero - 0.5) < 0.1


def test_each_mechanism_alone_samples_and_some_columns_are_categorical():
    for mechanism in MECHANISMS:
        task = make_task(
            "tabular_regression",
            6,
            {"mechanisms": [mechanism], "categorical_probability": 1.0, "missing_probability": 0},
        )
        episode = task.sample(64, 32, generator_for(0, mechanism))
        assert torch.isfinite(episode.targets).all(), mechanism
        x = episode.inputs[:, :, 0]  # the first column is used by every table
        distinct = torch.tensor([row.unique().numel() for row in x])
        assert distinct.max() <= task.options.max_categories, mechanism


def test_tables_are_a_function_of_the_seed():
    task = make_task("tabular_classification", 6)
    first, again = (task.sample(16, 32, generator_for(3, "t")) for _ in range(2))
    other = task.sample(16, 32, generator_for(4, "t"))
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.inputs, other.inputs)


def test_robust_scaling_ignores_missing_values_and_outliers():
    values = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [1000.0, 0.0]])
    values[1, 0] = float("nan")
    centre, scale = robust_scaling(values)
    assert centre[0, 0] == 3.5  # median of 1, 3, 4, 1000
    assert scale[0, 1] == 1.0  # a constant column keeps scale 1
    scaled = standardize(values, centre, scale, clip=4.0)
    assert scaled[1, 0] == 0.0 and scaled[4, 0] == 4.0  # missing → 0, outlier clipped


def test_options_name_what_is_wrong():
    with pytest.raises(ConfigError, match="min_features"):
        make_task("tabular_regression", 4, {"min_features": 5})
    with pytest.raises(ValueError, match="unknown mechanisms"):
        make_task("tabular_regression", 4, {"mechanisms": ["scm", "gp"]})
    with pytest.raises(ValueError, match="min_classes"):
        make_task("tabular_classification", 4, {"n_classes": 3, "min_classes": 4})


def test_every_probe_runs_on_a_set_style_model_or_refuses_it_clearly(tmp_path):
    """Probes read hidden states, attention maps and patch residual streams: with private
    queries they must keep the visibility mask (a patching hook that dropped it once made the
    model see its queries)."""
    from conftest import tiny_config
    from iclab.probes import PROBES, probe_run
    from iclab.run import train_run

    config = tiny_config(
        model={"mixer": "softmax(positions=none)", "tokens": "set"}, train={"steps": 4}
    )
    train_run(config, tmp_path / "run", show_progress=False)
    ran = []
    for name in PROBES.names():
        try:
            result = probe_run(tmp_path / "run", name)
        except ConfigError:
            continue
        assert result.summary, name
        ran.append(name)
    assert {"linear_probe", "activation_patching", "attention_heads"} <= set(ran)


def test_patching_keeps_the_visibility_of_set_tokens():
    from iclab.probes.patching import patched

    model = set_model("regression")
    inputs, targets = prompt("regression", 2, 6)
    episode = Episode(inputs, targets, "regression")
    before = model.predict(episode)
    hidden = model.hidden_states(episode)
    nothing = torch.zeros(2, 12, dtype=torch.bool)
    with patched(model, 0, hidden[0], nothing):
        after = model.predict(episode)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
