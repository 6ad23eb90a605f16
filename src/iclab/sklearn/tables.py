"""``iclab predict``: a trained in-context learner on CSV files, the context's rows with their
target and the query's rows without (or with, to score the predictions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iclab.errors import ConfigError
from iclab.io import atomic_write_text
from iclab.sklearn.estimators import InContextClassifier, InContextRegressor
from iclab.sklearn.model_file import load_trained


@dataclass
class TablePrediction:
    out: Path
    kind: str
    target: str
    n_context: int
    n_query: int
    score: float | None  # accuracy or R² when the query file holds the target


def read_csv(path: Path, what: str) -> Any:
    try:
        import pandas
    except ImportError:
        raise ConfigError("reading CSV files needs pandas: pip install pandas") from None
    if not path.is_file():
        raise ConfigError(f"--{what}: no file {str(path)!r}")
    try:
        table = pandas.read_csv(path)
    except (ValueError, UnicodeDecodeError, pandas.errors.ParserError) as error:
        raise ConfigError(f"--{what} {path}: not a readable CSV file: {error}") from None
    if table.empty or table.shape[1] == 0:
        raise ConfigError(f"--{what} {path}: no rows")
    return table


def predict_csv(
    run: str | Path,
    context: Path,
    query: Path,
    target: str | None,
    out: Path | None,
    n_estimators: int,
    random_state: int,
    max_context: int | None = None,
) -> TablePrediction:
    """Fit on ``context`` (its ``target`` column, the last by default), predict ``query``'s
    rows, write the predictions (and class probabilities) as CSV to ``out``. ``max_context``
    None: 512 rows, or fewer where the model's learned positions read fewer."""
    trained = load_trained(run)
    if max_context is None:
        limit = trained.model.max_points
        max_context = 512 if limit is None else min(512, limit - 1)
    kind = trained.task.kind
    if kind not in ("regression", "classification"):
        raise ConfigError(
            f"{run} is a {kind} model; iclab predict needs regression or classification"
        )
    train, test = read_csv(context, "context"), read_csv(query, "query")
    target = train.columns[-1] if target is None else target
    if target not in train.columns:
        raise ConfigError(
            f"--target {target!r} is not a column of {context} "
            f"(columns: {', '.join(map(str, train.columns))})"
        )
    features = [column for column in train.columns if column != target]
    missing = [column for column in features if column not in test.columns]
    if missing:
        raise ConfigError(f"{query} lacks the feature columns {', '.join(map(str, missing))}")
    estimator_type = InContextRegressor if kind == "regression" else InContextClassifier
    estimator = estimator_type(
        run=run, n_estimators=n_estimators, max_context=max_context, random_state=random_state
    )
    truth = train[target]
    if truth.isna().any():
        raise ConfigError(f"{context}: the target column {target!r} has missing values")
    try:
        estimator.fit(train[features], truth)
        predictions = estimator.predict(test[features])
        result = test[features].iloc[:, :0].copy()  # the query's index, no columns yet
        result[target] = predictions
        if kind == "classification":
            for label, column in zip(
                estimator.classes_, estimator.predict_proba(test[features]).T, strict=True
            ):
                result[f"p({label})"] = column
        score = (
            float(estimator.score(test[features], test[target]))
            if target in test.columns and not test[target].isna().any()
            else None
        )
    except ValueError as error:
        raise ConfigError(f"iclab predict: {error}") from None
    out = out or query.with_name(f"{query.stem}_predictions.csv")
    atomic_write_text(out, result.to_csv(index=False))
    return TablePrediction(out, kind, str(target), len(train), len(test), score)
