"""The contract every registered task family keeps, checked for all of them at once.

Family-specific statistics live in each family's own test file; this file makes sure a new family
cannot forget the shared rules: shapes and dtypes per kind, device, determinism by seed, a preset
that trains the default model, yardsticks that apply and predict, and a causal model over it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import model_for
from iclab.algorithms import build_algorithm
from iclab.config import PRESETS_DIR, ModelConfig, TaskConfig, load_config
from iclab.metrics import score, training_loss
from iclab.seeding import generator_for
from iclab.tasks import TASKS, make_task

FAMILIES = TASKS.names()
BATCH = 4


def sample(task, seed=0, n_points=None):
    n_points = n_points or type(task).default_n_points
    return task.sample(BATCH, n_points, generator_for(seed, "contract"))


@pytest.mark.parametrize("name", FAMILIES)
def test_episodes_have_the_shapes_and_dtypes_of_their_kind(name):
    task = make_task(name)
    episode = sample(task)
    n = type(task).default_n_points
    assert episode.kind == task.kind
    assert episode.targets.shape == (BATCH, n)
    if task.kind == "tokens":
        assert episode.inputs.shape == (BATCH, n) and episode.inputs.dtype == torch.long
    else:
        assert episode.inputs.shape == (BATCH, n, task.io().n_dims)
        assert episode.inputs.dtype == torch.float32
    if task.kind == "regression":
        assert task.n_classes is None and episode.targets.dtype == torch.float32
        assert task.target_scale > 0
    else:
        assert episode.targets.dtype == torch.long
        assert episode.targets.min() >= 0 and episode.targets.max() < task.n_classes
    if task.kind == "decisions":  # the history: an action and its reward per step
        assert episode.actions.shape == episode.rewards.shape == (BATCH, n)
        assert episode.actions.dtype == torch.long and episode.rewards.dtype == torch.float32
        assert episode.actions.min() >= 0 and episode.actions.max() < task.n_classes
    else:
        assert episode.actions is None and episode.rewards is None
    if episode.loss_mask is not None:
        assert episode.loss_mask.shape == (BATCH, n) and episode.loss_mask.dtype == torch.bool
        assert episode.loss_mask.any(dim=1).all(), "every prompt must score some position"
    for key, value in episode.meta.items():
        assert value.shape[0] == BATCH, f"meta[{key!r}] is not batch-first"
    assert episode.device == torch.device("cpu")


@pytest.mark.parametrize("name", FAMILIES)
def test_a_batch_is_a_pure_function_of_the_seed(name):
    task = make_task(name)
    first, again, other = sample(task), sample(task), sample(task, seed=1)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    for key in first.meta:
        assert torch.equal(first.meta[key], again.meta[key])
    assert not (
        torch.equal(first.inputs, other.inputs) and torch.equal(first.targets, other.targets)
    )


def preset_tasks() -> dict[str, list[str]]:
    """Family name → the presets shipped for it (every preset must load)."""
    presets: dict[str, list[str]] = {}
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        presets.setdefault(load_config(path.stem).task.name, []).append(path.stem)
    return presets


def test_every_family_has_a_preset_that_trains_a_softmax_transformer():
    """Softmax attention with learned positions, or without positions for set-style prompts
    (the tabular presets), and no dropout; a short convolution before it is allowed (the
    quickstart's and two other presets' ``short_conv=2``). A family's other presets may choose
    other positions (length_generalization's rotary ones)."""

    def plain_softmax(preset: str) -> bool:
        model = load_config(preset).model
        if model.mixer.name != "softmax" or model.mixer.options.dropout:
            return False
        positions = "none" if model.tokens == "set" else "learned"
        return model.mixer.options.positions == positions

    presets = preset_tasks()
    assert not set(FAMILIES) - set(presets), "families without a preset"
    for name, names in presets.items():
        assert any(plain_softmax(preset) for preset in names), name


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_states_its_paper_description_and_option_docs(name):
    family = TASKS.get(name)
    assert family.paper and family.__doc__ and family.__doc__.strip()
    for field, info in family.Options.model_fields.items():
        assert info.description, f"{name} option {field} has no description"


@pytest.mark.parametrize("name", FAMILIES)
def test_yardsticks_apply_predict_and_score_in_range(name):
    task = make_task(name)
    episode = sample(task)
    assert task.yardsticks, f"{name} has no yardsticks"
    for spec in task.yardsticks:
        values = score(build_algorithm(spec, task).predict(episode), episode, task.target_scale)
        scored = values[~values.isnan()]
        assert scored.numel() > 0 and scored.isfinite().all(), spec
        if task.kind == "decisions":  # regret
            assert (scored >= 0).all(), spec
        elif task.kind != "regression":
            assert ((scored == 0) | (scored == 1)).all(), spec


@pytest.mark.parametrize("name", FAMILIES)
def test_the_default_model_is_causal_and_trainable_on_every_family(name):
    torch.manual_seed(0)
    task_config = TaskConfig(name=name)
    model = model_for(ModelConfig(n_layers=2, d_model=16, n_heads=2), task_config).eval()
    task = make_task(name)
    episode = sample(task)
    prediction = model(episode)
    loss = training_loss(prediction, episode)
    loss.backward()
    assert loss.isfinite() and all(p.grad is not None for p in model.parameters())

    cut = episode.n_points // 2
    changed = sample(task, seed=7)
    later = slice(cut + 1, None)
    episode.inputs[:, later] = changed.inputs[:, later]
    episode.targets[:, cut:] = changed.targets[:, cut:]
    if task.kind == "decisions":  # what the context shows after a step: its action and reward
        episode.actions[:, cut:] = changed.actions[:, cut:]
        episode.rewards[:, cut:] = changed.rewards[:, cut:]
    with torch.no_grad():
        after = model(episode)
    torch.testing.assert_close(after[:, : cut + 1], prediction.detach()[:, : cut + 1])


def test_the_readme_table_lists_every_family_and_its_default_yardsticks():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = {line for line in readme.splitlines() if line.startswith("| `")}
    for name, family in TASKS:
        row = next((r for r in rows if f"`{name}`" in r.split("|")[1]), None)
        assert row is not None, f"README has no row for {name}"
        assert all(f"`{spec}`" in row for spec in family.yardsticks), name
