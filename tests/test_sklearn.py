"""iclab.sklearn: the estimators pass scikit-learn's own checks, answer test rows
independently, are deterministic, pickle without torch objects, and ship with bundled models."""

from __future__ import annotations

import io
import pickle
import pickletools
import unittest
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris, make_classification
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from iclab.errors import ConfigError
from iclab.sklearn import (
    InContextClassifier,
    InContextRegressor,
    TrainedModel,
    bundled_names,
    export_model,
    load_trained,
)

ARRAY_API_SKIP = "SCIPY_ARRAY_API is not set"


@parametrize_with_checks([InContextRegressor(n_estimators=2), InContextClassifier(n_estimators=2)])
def test_scikit_learn_checks(estimator, check):
    """Every check of scikit-learn runs. One skips itself: check_array_api_input needs
    SCIPY_ARRAY_API=1 set before SciPy is first imported, which would change SciPy for the
    whole test session; the estimators declare no array-API support (inputs go through
    np.asarray), so that check has nothing of theirs to test."""
    try:
        check(estimator)
    except unittest.SkipTest as skip:
        assert ARRAY_API_SKIP in str(skip), f"unexpected skip: {skip}"


def iris():
    X, y = load_iris(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(y))
    return X[order[:100]], y[order[:100]], X[order[100:]], y[order[100:]]


def test_bundled_models_are_there_and_small():
    assert set(bundled_names()) >= {"tabular_regression", "tabular_classification"}
    for name in ("tabular_regression", "tabular_classification"):
        trained = load_trained(name)
        assert trained.config.model.tokens == "set"
        assert trained.model.n_params() < 1_000_000


def test_the_bundled_classifier_learns_iris_in_context():
    X, y, X_test, y_test = iris()
    accuracy = InContextClassifier().fit(X, y).score(X_test, y_test)
    # 50 test rows: chance is 1/3; 0.8 is far above it whatever the exact model
    assert accuracy > 0.8


def test_the_bundled_regressor_beats_the_mean_on_diabetes():
    X, y = load_diabetes(return_X_y=True)
    r2 = InContextRegressor().fit(X[:300], y[:300]).score(X[300:], y[300:])
    assert r2 > 0.2  # the mean scores 0 and ridge about 0.4 on this split


def test_predictions_do_not_depend_on_the_other_test_rows():
    X, y, X_test, _ = iris()
    model = InContextClassifier(n_estimators=3).fit(X, y)
    full = model.predict_proba(X_test)
    order = np.random.RandomState(1).permutation(len(X_test))
    np.testing.assert_allclose(model.predict_proba(X_test[order]), full[order], atol=1e-12)
    np.testing.assert_allclose(model.predict_proba(X_test[7:9]), full[7:9], atol=1e-12)
    np.testing.assert_allclose(model.predict_proba(X_test[3:4]), full[3:4], atol=1e-12)


def test_a_random_state_fixes_the_predictions_and_another_changes_them():
    X, y, X_test, _ = iris()
    first = InContextClassifier(random_state=3).fit(X, y).predict_proba(X_test)
    again = InContextClassifier(random_state=3).fit(X, y).predict_proba(X_test)
    other = InContextClassifier(random_state=4).fit(X, y).predict_proba(X_test)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-6


def test_members_see_different_views_and_the_ensemble_averages_them():
    X, y, X_test, _ = iris()
    one = InContextClassifier(n_estimators=1).fit(X, y)
    four = InContextClassifier(n_estimators=4).fit(X, y)
    views = four.views_
    assert len({tuple(view.columns) for view in views}) > 1
    assert len({tuple(view.classes) for view in views}) > 1
    # the first member of both is the same view (same random_state): the ensemble's average
    # differs from it
    assert np.array_equal(one.views_[0].columns, views[0].columns)
    assert np.abs(one.predict_proba(X_test) - four.predict_proba(X_test)).max() > 1e-6


def test_more_columns_than_the_model_reads_go_to_members_as_subsets():
    X, y = make_classification(200, n_features=40, n_informative=5, random_state=0)
    model = InContextClassifier(n_estimators=4).fit(X[:150], y[:150])
    width = model.width_
    assert all(len(view.columns) == width < 40 for view in model.views_)
    assert len(set().union(*(set(view.columns) for view in model.views_))) > width
    assert model.score(X[150:], y[150:]) > 0.6


def test_long_tables_go_to_members_as_row_subsets_of_max_context():
    X, y, _, _ = iris()
    model = InContextClassifier(max_context=40, n_estimators=3).fit(X, y)
    assert all(len(view.rows) == 40 for view in model.views_)
    assert len(set().union(*(set(view.rows) for view in model.views_))) > 40


def test_a_data_frame_with_categories_and_missing_values():
    X, y, X_test, y_test = iris()
    columns = ["a", "b", "c", "d"]

    def frame(values):
        table = pd.DataFrame(values, columns=columns)
        table["colour"] = np.where(values[:, 2] > 3, "red", "blue")  # informative category
        table.loc[::5, "a"] = np.nan
        return table

    train, test = frame(X), frame(X_test)
    test.loc[0, "colour"] = "green"  # a category never seen in fit
    model = InContextClassifier().fit(train, y)
    assert model.categorical_columns_ == ["colour"]
    assert list(model.feature_names_in_) == [*columns, "colour"]
    assert model.score(test, y_test) > 0.8
    with pytest.raises(ValueError, match="lacks"):
        model.predict(test.drop(columns="colour"))


def test_pipeline_grid_search_and_cross_validation():
    X, y, _, _ = iris()
    pipeline = make_pipeline(FunctionTransformer(), InContextClassifier(n_estimators=1))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.6
    search = GridSearchCV(InContextClassifier(), {"n_estimators": [1, 2]}, cv=2).fit(X, y)
    assert search.best_params_["n_estimators"] in (1, 2)


def test_pickling_stores_safetensors_bytes_and_never_calls_torch_load(monkeypatch):
    X, y, X_test, _ = iris()
    model = InContextClassifier(n_estimators=2).fit(X, y)
    expected = model.predict_proba(X_test)
    data = pickle.dumps(model)
    modules = {
        argument.split()[0] if isinstance(argument, str) else ""
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data))
        if opcode.name in ("GLOBAL", "STACK_GLOBAL", "SHORT_BINUNICODE", "BINUNICODE")
    }
    assert not any(module.startswith("torch") for module in modules)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    restored = pickle.loads(data)
    np.testing.assert_array_equal(restored.predict_proba(X_test), expected)
    assert isinstance(model.trained_, TrainedModel)  # pickling left the estimator as it was


def test_limits_and_wrong_models_are_clear_errors(tmp_path):
    X, y, _, _ = iris()
    limit = load_trained("tabular_classification").task.n_classes
    many = np.arange(len(X)) % (limit + 1)
    with pytest.raises(ValueError, match=f"at most {limit}"):
        InContextClassifier().fit(X, many)
    with pytest.raises(ConfigError, match="is a classification model"):
        InContextRegressor(run="tabular_classification").fit(X, y)
    with pytest.raises(ConfigError, match="did you mean tabular_regression"):
        InContextRegressor(run="tabular_regresion").fit(X, y)
    with pytest.raises(ValueError, match="n_estimators must be a positive integer"):
        InContextRegressor(n_estimators=0).fit(X, y)
    not_a_model = tmp_path / "weights.safetensors"
    not_a_model.write_bytes(b"\x00" * 20)
    with pytest.raises(ConfigError, match="not a safetensors model file"):
        InContextRegressor(run=not_a_model).fit(X, y)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import tiny_config
    from iclab.run import train_run

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train_run(tiny_config(), run_dir, show_progress=False)
    return run_dir


def test_an_exported_run_predicts_like_its_run(tmp_path, trained_run):
    """A model file of a run answers as the run directory does (a linear-regression run with
    learned positions for 8 examples: the estimators take any regression run, within its
    length)."""
    path = export_model(trained_run, tmp_path / "model")
    assert path.suffix == ".safetensors"
    X, y = np.random.RandomState(0).randn(10, 3), np.random.RandomState(1).randn(10)
    fitted = [
        InContextRegressor(run=run, n_estimators=2, max_context=7).fit(X, y)
        for run in (trained_run, path)
    ]
    np.testing.assert_array_equal(fitted[0].predict(X[:4]), fitted[1].predict(X[:4]))
    with pytest.raises(ValueError, match="reads at most 7 context rows"):
        InContextRegressor(run=path, max_context=8).fit(X, y)


def test_iclab_predict_reads_csv_files_and_writes_predictions(tmp_path):
    from typer.testing import CliRunner

    from iclab.cli import app

    frame = load_iris(as_frame=True).frame
    frame["species"] = frame.pop("target").map({0: "setosa", 1: "versicolor", 2: "virginica"})
    frame = frame.sample(frac=1.0, random_state=0)
    frame.iloc[:100].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[100:].to_csv(tmp_path / "test.csv", index=False)
    runner = CliRunner()
    arguments = ["predict", "tabular_classification", "--context", str(tmp_path / "train.csv")]
    result = runner.invoke(app, [*arguments, "--query", str(tmp_path / "test.csv")])
    assert result.exit_code == 0, result.output
    assert "50 rows predicted from 100 context rows, accuracy" in result.output
    written = pd.read_csv(tmp_path / "test_predictions.csv")
    assert list(written.columns) == ["species", "p(setosa)", "p(versicolor)", "p(virginica)"]
    np.testing.assert_allclose(written.iloc[:, 1:].sum(1), 1.0)
    # the same predictions as the estimator on the same rows
    expected = (
        InContextClassifier()
        .fit(frame.iloc[:100, :4], frame.iloc[:100]["species"])
        .predict(frame.iloc[100:, :4])
    )
    assert list(written["species"]) == list(expected)
    for mistake, message in (
        (["--target", "specie"], "--target 'specie' is not a column"),
        (["--query", str(tmp_path / "nope.csv")], "--query: no file"),
    ):
        result = runner.invoke(app, [*arguments, "--query", str(tmp_path / "test.csv"), *mistake])
        assert result.exit_code == 2 and message in result.output, result.output


def test_iclab_export_writes_a_model_file(tmp_path, trained_run):
    from typer.testing import CliRunner

    from iclab.cli import app

    result = CliRunner().invoke(app, ["export", str(trained_run), str(tmp_path / "tiny")])
    assert result.exit_code == 0, result.output
    trained = load_trained(tmp_path / "tiny.safetensors")
    assert trained.config.task.name == "linear_regression"
    result = CliRunner().invoke(app, ["export", str(tmp_path), str(tmp_path / "x")])
    assert result.exit_code == 2 and "not an iclab run" in result.output


def test_the_readme_example_runs_and_beats_chance(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Your own tables", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    accuracy = float(capsys.readouterr().out.strip())
    assert accuracy > 0.8  # 89 test rows of 3 classes


@pytest.mark.filterwarnings("ignore:the curriculum reaches")  # one step of a 100k-step recipe
@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_the_gpu_configs_of_the_tabular_learners_load_and_train(kind, tmp_path):
    """The GPU-scale configs are valid as written; one step at toy size proves they train."""
    from iclab.config import PRESETS_DIR, load_config
    from iclab.run import train_run

    path = PRESETS_DIR / "gpu" / f"tabular_{kind}.yaml"
    config = load_config(path)
    assert (config.model.n_layers, config.model.d_model, config.task.n_points) == (12, 512, 1024)
    small = load_config(
        path,
        [
            "train.steps=1",
            "train.batch_size=2",
            "model.n_layers=1",
            "model.d_model=16",
            "task.n_dims=4",
        ],
    )
    train_run(small, tmp_path / "run", show_progress=False)
    assert (tmp_path / "run" / "checkpoints" / "step-0000001").is_dir()


def test_iclab_predict_fits_the_context_to_a_model_with_learned_positions(tmp_path, trained_run):
    """A run with a position table for 8 examples reads 7 context rows per member unless told
    otherwise; asking for more names the limit and the option."""
    from typer.testing import CliRunner

    from iclab.cli import app

    rows = np.random.RandomState(0).randn(30, 4)
    pd.DataFrame(rows, columns=["a", "b", "c", "y"]).iloc[:20].to_csv(
        tmp_path / "c.csv", index=False
    )
    pd.DataFrame(rows[20:, :3], columns=["a", "b", "c"]).to_csv(tmp_path / "q.csv", index=False)
    arguments = ["predict", str(trained_run), "--context", str(tmp_path / "c.csv")]
    result = CliRunner().invoke(app, [*arguments, "--query", str(tmp_path / "q.csv")])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "q_predictions.csv")) == 10
    result = CliRunner().invoke(
        app, [*arguments, "--query", str(tmp_path / "q.csv"), "--max-context", "12"]
    )
    assert result.exit_code == 2 and "at most 7 context rows" in result.output
    assert "--max-context" in result.output
