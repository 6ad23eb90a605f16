"""Probes attention_heads and activation_patching: head scores on hand-made attention maps,
patching identities on untrained models, and both end to end on tiny trained runs."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import model_for, tiny_config
from iclab.config import ModelConfig, TaskConfig
from iclab.probes import build_probe, probe_run
from iclab.probes.heads import (
    nearest_example_targets,
    ngram_targets,
    prefix_matching_targets,
    previous_token_targets,
    score_totals,
    second_half_only,
)
from iclab.probes.patching import (
    paired_prompts,
    patch_totals,
    patched,
    patching_effect,
    position_masks,
    query_examples,
)
from iclab.run import train_run

MQAR = {"name": "mqar", "n_points": 16, "vocab_size": 16, "n_pairs": 4, "n_queries": 4}


def repeated_distinct_tokens(half: int) -> torch.Tensor:
    """(1, 2·half): a sequence of distinct tokens followed by itself."""
    sequence = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:half]
    return torch.cat((sequence, sequence))[None]


def one_hot_maps(keys: list[int]) -> torch.Tensor:
    """(1, 1, T, T): query t attends only to key keys[t]."""
    return torch.nn.functional.one_hot(torch.tensor(keys), len(keys)).float()[None, None]


def uniform_causal_maps(length: int) -> torch.Tensor:
    causal = torch.ones(length, length).tril()
    return (causal / causal.sum(-1, keepdim=True))[None, None]


def test_exact_induction_pattern_scores_one():
    half = 6
    tokens = repeated_distinct_tokens(half)
    keys = [0] * half + [t - half + 1 for t in range(half, 2 * half)]  # copy's next token
    induction = second_half_only(prefix_matching_targets(tokens))
    assert head_scores(one_hot_maps(keys), induction).item() == pytest.approx(1.0)


def test_uniform_causal_attention_scores_one_over_the_number_of_keys():
    half = 6
    tokens = repeated_distinct_tokens(half)
    induction = second_half_only(prefix_matching_targets(tokens))
    expected = sum(1 / (t + 1) for t in range(half, 2 * half)) / half  # one target per query
    assert head_scores(uniform_causal_maps(2 * half), induction).item() == pytest.approx(expected)
    previous = previous_token_targets(1, 2 * half, torch.device("cpu"))
    expected_previous = sum(1 / (t + 1) for t in range(1, 2 * half)) / (2 * half - 1)
    assert head_scores(uniform_causal_maps(2 * half), previous).item() == pytest.approx(
        expected_previous
    )


def head_scores(maps, targets):
    """(H,) mean attention on target keys over the queries that have one."""
    total, count = score_totals(maps, targets)
    return total / count


def test_previous_token_head_scores_one_on_previous_token_and_zero_on_induction():
    half = 6
    tokens = repeated_distinct_tokens(half)
    maps = one_hot_maps([0, *range(2 * half - 1)])
    previous = previous_token_targets(1, 2 * half, torch.device("cpu"))
    induction = second_half_only(prefix_matching_targets(tokens))
    assert head_scores(maps, previous).item() == pytest.approx(1.0)
    assert head_scores(maps, induction).item() == 0.0


def test_ngram_targets_are_the_keys_after_earlier_occurrences_of_the_last_n_minus_1_tokens():
    a, b, c, d = 0, 1, 2, 3
    tokens = torch.tensor([[a, b, c, a, b, d, a, b]])
    bigram, trigram = prefix_matching_targets(tokens)[0], ngram_targets(tokens, 3)[0]
    assert bigram[6].nonzero().flatten().tolist() == [1, 4]  # after each earlier a
    assert bigram[7].nonzero().flatten().tolist() == [2, 5]  # after each earlier b
    assert trigram[7].nonzero().flatten().tolist() == [2, 5]  # after each earlier (a, b)
    assert trigram[4].nonzero().flatten().tolist() == [2]
    assert trigram[6].nonzero().flatten().tolist() == []  # (d, a) never occurred before


def test_vector_prefix_matching_targets_the_label_of_the_nearest_earlier_example():
    inputs = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [9.0, 0.0], [0.5, 0.0]]])
    targets = nearest_example_targets(inputs)[0]  # tokens x0 y0 x1 y1 x2 y2 x3 y3
    assert {query: targets[query].nonzero().flatten().tolist() for query in range(8)} == {
        0: [],
        1: [],
        2: [1],  # x1 → y0 (only earlier example)
        3: [],
        4: [3],  # x2 → y1 (x1 nearest)
        5: [],
        6: [1],  # x3 → y0 (x0 nearest)
        7: [],
    }


def untrained(mixer: str = "softmax", task: dict | None = None, n_layers: int = 2):
    torch.manual_seed(0)
    task_config = TaskConfig(**(task or {"n_dims": 3, "n_points": 8}))
    model = model_for(
        ModelConfig(mixer=mixer, n_layers=n_layers, d_model=32, n_heads=2), task_config
    )
    return model.eval(), task_config.build()


def test_attention_heads_refuses_a_model_without_softmax_attention():
    model, task = untrained("gru")
    with pytest.raises(
        ValueError, match="needs softmax attention; this model's mixers are gru, gru"
    ):
        build_probe("attention_heads").check_applies(model, task)
    softmax_model, _ = untrained("softmax")
    build_probe("attention_heads").check_applies(softmax_model, task)  # no error


def test_attention_heads_reports_the_uniform_values_when_queries_ignore_keys():
    model, task = untrained()
    for block in model.backbone.blocks:  # queries and keys 0: every causal key weighs the same
        with torch.no_grad():
            block.mixer.qkv.weight[:64].zero_()
            block.mixer.qkv.bias[:64].zero_()
    result = build_probe("attention_heads(n_prompts=8)").run(
        model, task, 8, torch.Generator().manual_seed(0)
    )
    values = {
        (row["layer"], row["head"], row["score"]): row["value"] for row in result.tables["heads"]
    }
    previous = sum(1 / (t + 1) for t in range(1, 16)) / 15  # 16 tokens
    induction = sum(1 / (2 * i + 1) for i in range(4, 8)) / 4  # x_i → y_{i−4}, i = 4..7
    for layer in (0, 1):
        for head in (0, 1):
            assert values[layer, head, "previous_token"] == pytest.approx(previous)
            assert values[layer, head, "induction"] == pytest.approx(induction)
    assert {row["score"] for row in result.tables["heads"]} == {
        "previous_token",
        "prefix_matching",
        "induction",
    }


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Tiny softmax runs of linear regression and of MQAR (30 steps each)."""
    root = tmp_path_factory.mktemp("runs")
    regression = root / "regression"
    train_run(tiny_config(), regression, show_progress=False)
    mqar = root / "mqar"
    train_run(
        tiny_config(task=MQAR, eval={"algorithms": ["mqar_lookup"]}), mqar, show_progress=False
    )
    return {"regression": regression, "mqar": mqar}


@pytest.mark.parametrize("run", ["regression", "mqar"])
def test_attention_heads_end_to_end_writes_a_score_per_layer_head_and_score(trained_runs, run):
    spec = "attention_heads(n_prompts=16)"
    result = probe_run(trained_runs[run], spec)
    directory = trained_runs[run] / "probes" / "attention_heads-n_prompts-16"
    with open(directory / "heads.csv") as file:
        rows = list(csv.DictReader(file))
    names = ["previous_token", "prefix_matching", "induction"] + (
        ["ngram3"] if run == "mqar" else []
    )
    assert len(rows) == 2 * 2 * len(names)  # layers × heads × scores
    assert {row["score"] for row in rows} == set(names)
    assert all(0.0 <= float(row["value"]) <= 1.0 for row in rows)
    summary = json.loads((directory / "summary.json").read_text())
    for name in names:
        best = max(float(row["value"]) for row in rows if row["score"] == name)
        assert summary[f"{name}_max"] == pytest.approx(best)
    assert result.summary == {key: value for key, value in summary.items() if key != "probe"}
    expected = {"attention_layer0", "attention_layer1"} | {f"{name}_scores" for name in names}
    assert {path.stem for path in directory.glob("*.png")} == expected


def regression_pair(model, task, batch=16):
    return paired_prompts(task, batch, 8, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mixer", ["softmax", "gru"])
def test_patching_all_positions_at_any_layer_gives_a_prediction(mixer):
    model, task = untrained(mixer)
    a, b, _ = regression_pair(model, task)
    with torch.no_grad():
        hidden_a, prediction_a = model.hidden_states(a), model(a)
        everywhere = torch.ones(16, 16, dtype=torch.bool)
        for layer in range(3):
            with patched(model, layer, hidden_a[layer], everywhere):
                torch.testing.assert_close(model(b), prediction_a, rtol=0, atol=1e-5)
        totals = patch_totals(model, a, b)
    for layer in range(3):
        numerator, denominator, _, _ = totals[layer, "all"].tolist()
        assert numerator / denominator == pytest.approx(1.0, abs=1e-5)


def test_patching_no_positions_leaves_b_prediction_and_effect_zero():
    model, task = untrained()
    a, b, _ = regression_pair(model, task)
    with torch.no_grad():
        hidden_a, prediction_b = model.hidden_states(a), model(b)
        nowhere = torch.zeros(16, 16, dtype=torch.bool)
        for layer in range(3):
            with patched(model, layer, hidden_a[layer], nowhere):
                patched_b = model(b)
            torch.testing.assert_close(patched_b, prediction_b, rtol=0, atol=0)
            numerator, _ = patching_effect(patched_b[:, -1], model(a)[:, -1], prediction_b[:, -1])
            assert numerator.item() == 0.0
        assert not torch.allclose(model(a), prediction_b)  # the pairs do differ


def test_patching_the_query_token_at_the_last_layer_gives_that_layers_read_out_of_a():
    model, task = untrained()
    a, b, _ = regression_pair(model, task)
    examples = query_examples(b)
    masks = position_masks(2 * examples, 16)
    with torch.no_grad():
        hidden_a = model.hidden_states(a)
        read_out_a = model.read_out(hidden_a[2])[:, -1]
        with patched(model, 2, hidden_a[2], masks["query"]):
            query_patched = model(b)[:, -1]
        with patched(model, 2, hidden_a[2], masks["context"]):
            context_patched = model(b)[:, -1]
        prediction_b = model(b)[:, -1]
        totals = patch_totals(model, a, b)
    torch.testing.assert_close(query_patched, read_out_a, rtol=0, atol=1e-6)
    torch.testing.assert_close(context_patched, prediction_b, rtol=0, atol=0)
    numerator, denominator, _, _ = totals[2, "query"].tolist()
    assert numerator / denominator == pytest.approx(1.0, abs=1e-5)
    assert totals[2, "context"][0].item() == 0.0


def test_regression_pairs_share_inputs_so_patching_the_query_embedding_changes_nothing():
    model, task = untrained()
    a, b, pairing = regression_pair(model, task)
    assert pairing == "shared inputs, different functions"
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.meta["w"], b.meta["w"])
    with torch.no_grad():
        totals = patch_totals(model, a, b)
    assert abs(totals[0, "query"][0].item()) < 1e-6 < totals[0, "query"][1].item()


def test_patching_effect_is_the_share_of_the_move_from_b_to_a():
    source, base = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    for patched_value, expected in ((base, 0.0), (source, 1.0), ((source + base) / 2, 0.5)):
        numerator, denominator = patching_effect(patched_value, source, base)
        assert (numerator / denominator).item() == pytest.approx(expected)


def test_token_task_patching_uses_logit_differences_and_all_positions_follow_a():
    model, task = untrained(task=MQAR)
    a, b, pairing = paired_prompts(task, 32, 16, torch.Generator().manual_seed(2))
    assert pairing == "independent prompts"
    with torch.no_grad():
        totals = patch_totals(model, a, b)
    numerator, denominator, hits, count = totals[1, "all"].tolist()
    assert count > 0 and hits == count
    assert numerator / denominator == pytest.approx(1.0, abs=1e-5)
    assert totals[2, "context"][0].item() == 0.0  # the last layer's context: no effect


def test_activation_patching_end_to_end_on_a_trained_run(trained_runs):
    run = trained_runs["regression"]
    result = probe_run(run, "activation_patching(n_prompts=32)")
    directory = run / "probes" / "activation_patching-n_prompts-32"
    with open(directory / "patching.csv") as file:
        rows = list(csv.DictReader(file))
    effects = {(int(row["layer"]), row["positions"]): float(row["effect"]) for row in rows}
    assert set(effects) == {
        (layer, name) for layer in range(3) for name in ("context", "query", "all")
    }
    assert all(effects[layer, "all"] == pytest.approx(1.0, abs=1e-5) for layer in range(3))
    assert effects[0, "query"] == pytest.approx(0.0, abs=1e-6)  # shared x: same embedding
    assert effects[2, "query"] == pytest.approx(1.0, abs=1e-5)
    assert effects[2, "context"] == pytest.approx(0.0, abs=1e-6)
    assert result.summary["pairs"] == "shared inputs, different functions"
    assert (directory / "patching.png").stat().st_size > 0
