"""The bundled in-context learners against scikit-learn's and LightGBM's on the datasets that
ship with scikit-learn.

    python benchmarks/tabular.py                        # every dataset, 10 splits
    python benchmarks/tabular.py --datasets iris,wine --repeats 3 --classifier RUN_OR_FILE

Every method sees the same repeated train/test splits (75% / 25%, stratified for
classification). The table gives each method's mean test score (accuracy; R² for regression)
with a 95% t-interval over the splits, and its mean fit + predict seconds; for iclab, the
paired difference from the linear baseline (logistic regression / ridge) with its interval.
Linear models and kNN get standardized inputs; the trees get them as they are.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from scipy import stats
from sklearn import datasets
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from iclab.sklearn import InContextClassifier, InContextRegressor


@dataclass
class Dataset:
    name: str
    kind: str  # classification or regression
    load: Callable[[], tuple[np.ndarray, np.ndarray]]


def linnerud_weight() -> tuple[np.ndarray, np.ndarray]:
    data = datasets.load_linnerud()
    return data.data, data.target[:, 0]  # exercise counts → body weight


DATASETS = [
    Dataset("iris", "classification", lambda: datasets.load_iris(return_X_y=True)),
    Dataset("wine", "classification", lambda: datasets.load_wine(return_X_y=True)),
    Dataset(
        "breast_cancer", "classification", lambda: datasets.load_breast_cancer(return_X_y=True)
    ),
    Dataset("digits", "classification", lambda: datasets.load_digits(return_X_y=True)),
    Dataset("diabetes", "regression", lambda: datasets.load_diabetes(return_X_y=True)),
    Dataset("linnerud", "regression", linnerud_weight),
]


def methods(kind: str, run: str | None, n_estimators: int) -> dict[str, Callable[[int], object]]:
    """Method name → a function of the split's seed that builds the estimator (``run``: the
    in-context learner's model, None for the bundled one)."""
    if kind == "classification":
        return {
            "iclab": lambda seed: InContextClassifier(
                run=run, n_estimators=n_estimators, random_state=seed
            ),
            "logistic_regression": lambda seed: make_pipeline(
                StandardScaler(), LogisticRegression(max_iter=5000)
            ),
            "knn": lambda seed: make_pipeline(StandardScaler(), KNeighborsClassifier()),
            "random_forest": lambda seed: RandomForestClassifier(random_state=seed),
            "hist_gradient_boosting": lambda seed: HistGradientBoostingClassifier(
                random_state=seed
            ),
            "lightgbm": lambda seed: LGBMClassifier(random_state=seed, verbose=-1),
        }
    return {
        "iclab": lambda seed: InContextRegressor(
            run=run, n_estimators=n_estimators, random_state=seed
        ),
        "ridge": lambda seed: make_pipeline(StandardScaler(), Ridge()),
        "knn": lambda seed: make_pipeline(StandardScaler(), KNeighborsRegressor()),
        "random_forest": lambda seed: RandomForestRegressor(random_state=seed),
        "hist_gradient_boosting": lambda seed: HistGradientBoostingRegressor(random_state=seed),
        "lightgbm": lambda seed: LGBMRegressor(random_state=seed, verbose=-1, min_child_samples=5),
    }


def interval(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean."""
    if len(values) < 2:
        return math.nan
    return stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def benchmark(dataset: Dataset, repeats: int, run: str | None, n_estimators: int) -> list[str]:
    X, y = dataset.load()
    splitter = (StratifiedShuffleSplit if dataset.kind == "classification" else ShuffleSplit)(
        n_splits=repeats, test_size=0.25, random_state=0
    )
    builders = methods(dataset.kind, run, n_estimators)
    scores: dict[str, list[float]] = {name: [] for name in builders}
    seconds: dict[str, list[float]] = {name: [] for name in builders}
    for seed, (train, test) in enumerate(splitter.split(X, y)):
        for name, build in builders.items():
            start = time.perf_counter()
            estimator = build(seed).fit(X[train], y[train])
            scores[name].append(float(estimator.score(X[test], y[test])))
            seconds[name].append(time.perf_counter() - start)
    baseline = "logistic_regression" if dataset.kind == "classification" else "ridge"
    rows = []
    for name in builders:
        mean, half = statistics.mean(scores[name]), interval(scores[name])
        paired = ""
        if name == "iclab":
            differences = [a - b for a, b in zip(scores[name], scores[baseline], strict=True)]
            paired = f"{statistics.mean(differences):+.3f} ± {interval(differences):.3f}"
        rows.append(
            f"| {dataset.name} | {name} | {mean:.3f} ± {half:.3f} | "
            f"{statistics.mean(seconds[name]):.2f} | {paired} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(d.name for d in DATASETS))
    parser.add_argument("--repeats", type=int, default=10, help="train/test splits")
    parser.add_argument("--classifier", default=None, help="model (default: the bundled one)")
    parser.add_argument("--regressor", default=None, help="model (default: the bundled one)")
    parser.add_argument("--n-estimators", type=int, default=8)
    args = parser.parse_args()
    chosen = args.datasets.split(",")
    unknown = set(chosen) - {d.name for d in DATASETS}
    if unknown:
        parser.error(f"unknown datasets {sorted(unknown)}; known: {[d.name for d in DATASETS]}")
    print(f"{args.repeats} splits (75% train / 25% test); score: accuracy or R², mean ± 95% CI")
    print("| dataset | method | score | fit + predict s | iclab − linear (paired) |")
    print("|---|---|---|---|---|")
    for dataset in DATASETS:
        if dataset.name in chosen:
            run = args.classifier if dataset.kind == "classification" else args.regressor
            for row in benchmark(dataset, args.repeats, run, args.n_estimators):
                print(row, flush=True)


if __name__ == "__main__":
    main()
