"""Real tables in the form the tabular prior trains on (``iclab.tasks.tabular``), and the
ensemble's views of them.

Columns that are not numbers (strings, categories in a DataFrame) become ordinal codes, unknown
categories and missing values become NaN; every column is then robustly standardized with the
context's statistics and clipped, and NaN becomes 0 (the median), exactly as the prior makes its
tables. Each ensemble member sees a different view: its own random order (or random subset,
past the model's width) of the columns, zero-padded to the model's width; its own order (or
random subset, past ``max_context``) of the context rows; and, for classification, its own
random relabelling of the classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.preprocessing import OrdinalEncoder
from torch import Tensor

from iclab.tasks.tabular import robust_scaling, standardize


def categorical_columns(X: Any) -> list:
    """The columns of a DataFrame that do not hold numbers (booleans count as numbers); none
    for other inputs."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "columns"):
        return []
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return [
        column
        for column, dtype in dtypes.items()
        if not (is_numeric_dtype(dtype) or is_bool_dtype(dtype))
    ]


def fit_encoder(X: Any, columns: list) -> OrdinalEncoder | None:
    """An ordinal encoder of the categorical columns (unknown and missing values → NaN)."""
    if not columns:
        return None
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    return encoder.fit(X[columns].astype("object"))


def encode(X: Any, columns: list, encoder: OrdinalEncoder | None) -> Any:
    """``X`` with its categorical columns replaced by their codes (a copy; others as given)."""
    if encoder is None:
        return X
    missing = [column for column in columns if column not in getattr(X, "columns", ())]
    if missing:
        raise ValueError(
            f"the estimator was fitted on a DataFrame with categorical columns {columns}; "
            f"X lacks {missing}: pass a DataFrame with the same columns"
        )
    X = X.copy()
    X[columns] = encoder.transform(X[columns].astype("object"))
    return X


@dataclass
class Scaling:
    """Per-column centre and scale of the context (``iclab.tasks.tabular.robust_scaling``), as
    NumPy arrays so that a pickled estimator holds no torch object."""

    centre: np.ndarray
    scale: np.ndarray
    clip: float

    @classmethod
    def fit(cls, X: np.ndarray, clip: float) -> Scaling:
        centre, scale = robust_scaling(torch.from_numpy(np.array(X, dtype=np.float64)))
        return cls(centre.numpy(), scale.numpy(), clip)

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(n, f) float64, standardized, clipped, missing values at 0."""
        values = torch.from_numpy(np.array(X, dtype=np.float64))
        centre, scale = torch.from_numpy(self.centre), torch.from_numpy(self.scale)
        return standardize(values, centre, scale, self.clip).numpy()


@dataclass
class View:
    """What one ensemble member sees: column indices (in the order given to the model), context
    row indices (in order), and a class relabelling (original class → model class)."""

    columns: np.ndarray
    rows: np.ndarray
    classes: np.ndarray | None

    def features(self, X: np.ndarray, width: int) -> Tensor:
        """(n, f) standardized columns → (n, width) float64: this view's columns, zero-padded."""
        chosen = X[:, self.columns]
        return torch.from_numpy(np.pad(chosen, ((0, 0), (0, width - chosen.shape[1]))))


def draw_views(
    n_views: int,
    n_columns: int,
    width: int,
    n_rows: int,
    max_context: int,
    n_classes: int | None,
    random: np.random.RandomState,
) -> list[View]:
    """``n_views`` views of a table; all the draws come from ``random``, so a fitted estimator's
    views are fixed by its ``random_state``."""
    views = []
    for _ in range(n_views):
        columns = random.permutation(n_columns)[:width]
        rows = random.permutation(n_rows)[:max_context]
        classes = None if n_classes is None else random.permutation(n_classes)
        views.append(View(columns, rows, classes))
    return views
