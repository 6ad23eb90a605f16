"""linear_probe: ridge probes of the residual stream for w, least squares and Xᵀy."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from iclab.algorithms.regression import prefix_least_squares
from iclab.probes import build_probe, probe_run
from iclab.probes.linear_probes import (
    LinearProbe,
    LinearProbeOptions,
    RidgePath,
    held_out_r2,
    probe_targets,
    r2_score,
)
from iclab.seeding import generator_for
from iclab.tasks import make_task


class PlantedModel(nn.Module):
    """A test double: layer 0 is noise; layer 1 is that noise plus ``w A`` at the x tokens
    (a fixed random A: d → E) when ``planted``, else the same noise again."""

    def __init__(self, n_dims: int, width: int, planted: bool = True) -> None:
        super().__init__()
        self.codec = SimpleNamespace(tokens_per_example=2)
        self.embedding = 3.0 * torch.randn(n_dims, width, generator=generator_for(0, "A"))
        self.noise = generator_for(0, "noise")
        self.planted = planted

    def hidden_states(self, episode) -> list[torch.Tensor]:
        batch, n_points, _ = episode.inputs.shape
        noise = torch.randn(batch, 2 * n_points, self.embedding.shape[1], generator=self.noise)
        signal = torch.zeros_like(noise)
        if self.planted:
            signal[:, 0::2] = (episode.meta["w"] @ self.embedding)[:, None]
        return [noise, noise + signal]


def r2_table(probe: LinearProbe, model: nn.Module, n_points: int = 6) -> dict:
    task = make_task("linear_regression", n_dims=4)
    result = probe.run(model, task, n_points, generator_for(1, "probe"))
    return {(r["target"], r["layer"], r["position"]): r["r2"] for r in result.tables["r2"]}


def test_probe_recovers_a_planted_linear_feature_only_in_the_layer_that_holds_it():
    probe = LinearProbe(LinearProbeOptions(targets=("w",), n_prompts=512))
    r2 = r2_table(probe, PlantedModel(n_dims=4, width=16))
    assert min(value for (_, layer, _), value in r2.items() if layer == 1) > 0.95
    assert max(value for (_, layer, _), value in r2.items() if layer == 0) < 0.1


def test_probe_of_prompt_independent_states_scores_no_better_than_zero_held_out():
    probe = LinearProbe(LinearProbeOptions(n_prompts=256))
    r2 = r2_table(probe, PlantedModel(n_dims=4, width=64, planted=False))
    scored = [value for value in r2.values() if not math.isnan(value)]
    assert len(scored) == len(r2) - 2 * 2  # least_squares, xty ≡ 0 at k = 0 in both layers
    assert max(scored) < 0.05
    # ... and not far below it either: the strength chosen on validation prompts shrinks the
    # probe to the mean rather than fitting 64 noise coordinates to 96 prompts.
    assert min(scored) > -0.1
    # The same features fitted and scored in sample do "explain" w: the held-out split is what
    # keeps the probe honest.
    episode = make_task("linear_regression", n_dims=4).sample(128, 1, generator_for(2, "x"))
    states = PlantedModel(4, 64, planted=False).hidden_states(episode)[1][:, :1].transpose(0, 1)
    w = episode.meta["w"].double()[None]
    in_sample = r2_score(RidgePath(states.double(), w).predict(states.double(), 1e-4), w)
    assert in_sample.item() > 0.3


class MarkedTokenModel(nn.Module):
    """A test double for the attention-pooled probe: every token is noise, except that the y
    token of example ``at`` carries ``w A`` and a marker coordinate (4.0) a pooling query can
    learn to find; uniform pooling over the visible tokens would dilute w A with their noise."""

    def __init__(self, n_dims: int, width: int, at: int) -> None:
        super().__init__()
        self.codec = SimpleNamespace(tokens_per_example=2)
        self.embedding = torch.randn(n_dims, width - 1, generator=generator_for(0, "A"))
        self.noise = generator_for(0, "noise")
        self.token = 2 * at + 1

    def hidden_states(self, episode) -> list[torch.Tensor]:
        batch, n_points, _ = episode.inputs.shape
        width = self.embedding.shape[1] + 1
        states = torch.randn(batch, 2 * n_points, width, generator=self.noise)
        states[:, self.token, :-1] += episode.meta["w"] @ self.embedding
        states[:, self.token, -1] = 4.0
        return [states]


def test_attention_pooled_probe_finds_the_token_that_holds_w_and_reads_only_up_to_x_k():
    """w sits at y_2's token (index 5): x_1 (pooling tokens 0–2) cannot see it, x_3 and x_5
    can, and the probe must learn to attend there; x_k's own token never holds it."""
    model = MarkedTokenModel(n_dims=4, width=17, at=2)
    options = {"targets": ("w",), "n_prompts": 1024, "positions": (1, 3, 5)}
    pooled = r2_table(LinearProbe(LinearProbeOptions(**options, pooling="attention")), model)
    assert pooled[("w", 0, 1)] < 0.1
    # uniform pooling (the query held at 0) reaches 0.65 and 0.53 here: the query must learn
    assert min(pooled[("w", 0, 3)], pooled[("w", 0, 5)]) > 0.85
    token = r2_table(LinearProbe(LinearProbeOptions(**options)), model)
    assert max(token.values()) < 0.05


def test_targets_are_least_squares_weights_and_moments_of_the_prefix():
    task = make_task("linear_regression", n_dims=3)
    episode = task.sample(8, 6, generator_for(3, "targets"))
    x, y, w = episode.inputs, episode.targets, episode.meta["w"]
    targets = probe_targets(x, y, w, ("w", "least_squares", "xty"))
    # x_i · (least-squares weights from the prefix) is the least_squares learner's prediction.
    predictions = (targets["least_squares"] * x.double()).sum(-1)
    torch.testing.assert_close(predictions.float(), prefix_least_squares(x, y), atol=1e-4, rtol=0)
    # Noiseless and k ≥ d examples seen: least squares is w itself; before any example it is 0.
    torch.testing.assert_close(
        targets["least_squares"][:, 3:].float(), w[:, None].expand(-1, 3, -1)
    )
    assert targets["least_squares"][:, 0].abs().max() == 0
    expected_xty = torch.stack([(y[:, :i, None] * x[:, :i]).sum(1) for i in range(6)], 1)
    torch.testing.assert_close(targets["xty"].float(), expected_xty)
    torch.testing.assert_close(targets["w"].float(), w[:, None].expand(-1, 6, -1))


def test_ridge_path_at_a_tiny_strength_is_least_squares_with_an_intercept():
    generator = generator_for(4, "ridge")
    features = torch.randn(2, 50, 5, generator=generator, dtype=torch.float64)
    targets = features @ torch.randn(5, 2, generator=generator, dtype=torch.float64) + 3.0
    targets += 0.1 * torch.randn(targets.shape, generator=generator, dtype=torch.float64)
    design = torch.cat([features, torch.ones_like(features[..., :1])], -1)
    expected = design @ torch.linalg.lstsq(design, targets).solution
    torch.testing.assert_close(RidgePath(features, targets).predict(features, 1e-12), expected)


def test_held_out_r2_of_an_exact_linear_target_is_one_and_of_a_constant_is_nan():
    generator = generator_for(5, "exact")
    features = torch.randn(3, 200, 8, generator=generator, dtype=torch.float64)
    linear = features @ torch.randn(8, 2, generator=generator, dtype=torch.float64)
    assert held_out_r2(features, linear, alpha=None).min() > 0.999
    assert held_out_r2(features, torch.zeros(3, 200, 2, dtype=torch.float64), 1.0).isnan().all()


@pytest.mark.parametrize(
    ("task_name", "reason"),
    [("mqar", "regression task"), ("decision_tree", r"meta\['w'\]")],
)
def test_probe_refuses_tasks_without_true_linear_weights(task_name, reason):
    with pytest.raises(ValueError, match=reason):
        LinearProbe().check_applies(PlantedModel(3, 8), make_task(task_name))
    LinearProbe().check_applies(PlantedModel(3, 8), make_task("linear_regression", n_dims=3))


def test_a_ridge_strength_for_the_attention_pooled_probe_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="alpha is the ridge strength of pooling=token"):
        LinearProbeOptions(pooling="attention", alpha=1.0)


def test_positions_outside_the_prompt_are_refused_by_name():
    probe = build_probe("linear_probe(positions=[9])")
    with pytest.raises(ValueError, match="positions"):
        probe.run(PlantedModel(3, 8), make_task("linear_regression", 3), 6, generator_for(0, "p"))


def test_probe_run_on_a_trained_run_writes_a_row_per_target_layer_and_position(tmp_path):
    from conftest import tiny_config  # linear_probe is registered by the imports above
    from iclab.run import train_run

    config = tiny_config()  # 2 layers, 8 points in d = 3
    train_run(config, tmp_path / "run", show_progress=False)
    result = probe_run(tmp_path / "run", "linear_probe(n_prompts=64)")
    directory = tmp_path / "run" / "probes" / "linear_probe-n_prompts-64"
    assert {p.name for p in directory.iterdir()} == {"summary.json", "r2.csv", "r2.png"}
    with open(directory / "r2.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 8 * 3  # targets × positions × (n_layers + 1)
    assert {(r["target"], r["layer"], r["position"]) for r in rows} == {
        (t, str(layer), str(k))
        for t in ("w", "least_squares", "xty")
        for layer in range(3)
        for k in range(8)
    }
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["best_layer_w"] in range(3) and summary["position"] == 7
    assert summary == {"probe": "linear_probe(n_prompts=64)", **result.summary}
