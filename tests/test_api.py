"""The Python API shown in the README, on a tiny config."""

from __future__ import annotations

import numpy as np
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


def test_the_top_level_names_are_discoverable():
    names = dir(iclab)
    assert {"load", "train_run", "evaluate_run", "load_config", "make_task"} <= set(names)
    assert all(hasattr(iclab, name) for name in names)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    run = tmp_path_factory.mktemp("api") / "run"
    iclab.train_run(tiny_config(train={"steps": 3}), run, show_progress=False, threads=1)
    return iclab.load(run)


def prompts(batch: int, k: int = 5, m: int = 2, d: int = 3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, k, d, generator=generator, dtype=torch.float64)
    y = torch.randn(batch, k, generator=generator, dtype=torch.float64)
    q = torch.randn(batch, m, d, generator=generator, dtype=torch.float64)
    return x, y, q


def test_numpy_float64_unbatched_and_batched_inputs_give_the_same_predictions(predictor):
    x, y, q = prompts(2)
    batched = predictor.predict(x, y, q)  # torch in, torch out
    assert isinstance(batched, torch.Tensor) and batched.shape == (2, 2)
    one = predictor.predict(x[1].numpy(), y[1].numpy(), q[1].numpy())  # NumPy in, NumPy out
    assert isinstance(one, np.ndarray) and one.shape == (2,)
    np.testing.assert_allclose(one, batched[1].numpy(), rtol=1e-5, atol=1e-6)
    single = predictor.predict(x[1].tolist(), y[1].tolist(), q[1, 0].tolist())  # lists, 1 query
    assert np.ndim(single) == 0 and single == pytest.approx(float(batched[1, 0]), rel=1e-5)


def test_a_query_is_never_seen_by_another_query(predictor):
    x, y, q = prompts(1, m=3)
    together = predictor.predict(x, y, q)
    alone = torch.stack([predictor.predict(x, y, q[:, j]) for j in range(3)], dim=1)
    torch.testing.assert_close(together, alone)


def test_the_predictions_are_the_models_own(predictor):
    x, y, q = prompts(1, m=1)
    episode = iclab.Episode(
        torch.cat([x, q], 1).float(), torch.cat([y, torch.zeros(1, 1, dtype=y.dtype)], 1).float()
    )
    expected = predictor.model.predict(episode)[0, -1]
    assert float(predictor.predict(x, y, q)[0, 0]) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, y, q: (x[..., :2], y, q[..., :2]), "reads 3 features per example"),
        (lambda x, y, q: (x, y[..., :-1], q), "one target per context example"),
        (lambda x, y, q: (x[0], y[0], q), "one set of queries per prompt"),
        (lambda x, y, q: (x.repeat(1, 3, 1), y.repeat(1, 3), q), "learned position table covers"),
        (lambda x, y, q: (x * torch.nan, y, q), "NaN"),
        (lambda x, y, q: ("text", y, q), "must be an array of numbers"),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_clear_errors(predictor, change, message):
    from iclab.errors import UserError

    x, y, q = prompts(2)
    with pytest.raises(UserError, match=message):
        predictor.predict(*change(x, y, q))
