"""The Python API shown in the README, on a tiny config."""

from __future__ import annotations

import pytest
import torch

import iclab
from conftest import tiny_config


def test_readme_api_trains_evaluates_and_predicts_like_an_algorithm(tmp_path):
    config = iclab.build_config(tiny_config().to_dict(), ["train.steps=5"])
    iclab.train_run(config, tmp_path / "mine", show_progress=False)
    points = iclab.evaluate_run(tmp_path / "mine").curves
    assert {p.learner for p in points} == {"model", "least_squares", "averaging"}
    model = iclab.load_trained_model(tmp_path / "mine")
    task = iclab.make_task("linear_regression", n_dims=3)
    least_squares = iclab.build_algorithm("least_squares", task)
    episode = task.sample(8, 8, torch.Generator().manual_seed(0))
    assert isinstance(model, iclab.InContextLearner)
    assert isinstance(least_squares, iclab.InContextLearner)
    assert model.predict(episode).shape == least_squares.predict(episode).shape == (8, 8)


def test_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="not_a_thing"):
        iclab.not_a_thing  # noqa: B018
