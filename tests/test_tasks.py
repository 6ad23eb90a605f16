"""Tasks: distributions as specified, and batches that are pure functions of (seed, step)."""

from __future__ import annotations

import math

import pytest
import torch

from iclab.seeding import generator_for
from iclab.tasks import TASKS, make_task
from iclab.tasks.regression import LinearRegression


def sample(task, step, batch=8, n_points=10, **kwargs):
    return task.sample(batch, n_points, generator_for(0, "train", step), **kwargs)


def test_same_seed_and_step_give_the_same_batch():
    task = LinearRegression(4)
    first, again = sample(task, 7), sample(task, 7)
    assert torch.equal(first.inputs, again.inputs)
    assert torch.equal(first.targets, again.targets)
    assert torch.equal(first.meta["w"], again.meta["w"])


def test_different_steps_and_seeds_give_different_batches():
    task = LinearRegression(4)
    assert not torch.equal(sample(task, 7).inputs, sample(task, 8).inputs)
    other_seed = task.sample(8, 10, generator_for(1, "train", 7))
    assert not torch.equal(sample(task, 7).inputs, other_seed.inputs)
    eval_stream = task.sample(8, 10, generator_for(0, "eval", 7))
    assert not torch.equal(sample(task, 7).inputs, eval_stream.inputs)


def test_noiseless_targets_are_the_true_linear_function():
    episode = sample(LinearRegression(5), 0)
    expected = torch.einsum("bnd,bd->bn", episode.inputs, episode.meta["w"])
    torch.testing.assert_close(episode.targets, expected)
    assert episode.inputs.shape == (8, 10, 5) and episode.targets.shape == (8, 10)


def test_inputs_and_weights_are_standard_normal():
    episode = sample(LinearRegression(4), 0, batch=2000, n_points=50)
    x, w = episode.inputs, episode.meta["w"]
    # standard errors: mean 1/sqrt(N), variance sqrt(2/N); 5 sigma tolerances
    assert abs(x.mean().item()) < 5 / math.sqrt(x.numel())
    assert abs(x.var().item() - 1) < 5 * math.sqrt(2 / x.numel())
    assert abs(w.var().item() - 1) < 5 * math.sqrt(2 / w.numel())
    covariance = torch.cov(x.reshape(-1, 4).T)
    assert (covariance - torch.eye(4)).abs().max() < 5 / math.sqrt(x.shape[0] * x.shape[1])


def test_noise_has_the_configured_std():
    task = make_task("linear_regression", 4, {"noise_std": 0.5})
    episode = sample(task, 0, batch=1000, n_points=40)
    residual = episode.targets - torch.einsum("bnd,bd->bn", episode.inputs, episode.meta["w"])
    n = residual.numel()
    assert abs(residual.std().item() - 0.5) < 5 * 0.5 / math.sqrt(2 * n)


def test_curriculum_zeroes_inactive_dimensions():
    episode = sample(LinearRegression(6), 0, n_dims_active=2)
    assert torch.all(episode.inputs[..., 2:] == 0)
    assert torch.all(episode.inputs[..., :2] != 0)


def test_make_task_rejects_unknown_options():
    with pytest.raises(ValueError, match="noise_sd"):
        make_task("linear_regression", 3, {"noise_sd": 1.0})


def test_registry_lists_linear_regression_with_its_paper():
    family = TASKS.get("linear_regression")
    assert family.kind == "regression" and "2208.01066" in family.paper
