"""scikit-learn estimators around a trained in-context learner: ``fit`` stores the context,
``predict`` answers each test row from the context alone, in one forward pass per ensemble
member and block of test rows.

    from iclab.sklearn import InContextClassifier
    InContextClassifier().fit(X_train, y_train).predict(X_test)

``run`` names the model: None for the one bundled with iclab, a bundled model's name, a run
directory or a model file (``iclab export``). Test rows never see each other (set-style
queries, or one prompt per row for other models), so predictions do not depend on the order or
number of test rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from iclab.errors import ConfigError
from iclab.sklearn.model_file import TrainedModel, load_trained
from iclab.sklearn.preprocessing import (
    Scaling,
    categorical_columns,
    draw_views,
    encode,
    fit_encoder,
)

QUERIES_PER_PASS = 1024  # test rows answered together (the memory of a pass grows with it)
DEFAULT_CLIP = 4.0  # standardized values are clipped here for models not trained on tables


class InContextEstimator(BaseEstimator):
    """What the regressor and the classifier share: loading the model, the table's
    preprocessing, the ensemble's views, and pickling as safetensors bytes."""

    kind: ClassVar[str]
    bundled: ClassVar[str]

    def __init__(
        self,
        run: str | Path | None = None,
        n_estimators: int = 8,
        max_context: int = 512,
        random_state: int | np.random.RandomState | None = 0,
        device: str = "cpu",
    ) -> None:
        self.run = run
        self.n_estimators = n_estimators
        self.max_context = max_context
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed by the median
        tags.non_deterministic = False
        return tags

    # fitting ----------------------------------------------------------------------------------

    def _fit_table(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Load the model, validate the table against it and store the standardized context."""
        for name, value in (("n_estimators", self.n_estimators), ("max_context", self.max_context)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        trained = self._load()
        self.categorical_columns_ = categorical_columns(X)
        self.encoder_ = fit_encoder(X, self.categorical_columns_)
        X, y = validate_data(
            self,
            encode(X, self.categorical_columns_, self.encoder_),
            y,
            ensure_all_finite="allow-nan",
            dtype=np.float64,
            y_numeric=self.kind == "regression",
        )
        limit = trained.model.max_points
        if limit is not None and self.max_context >= limit:
            raise ValueError(
                f"max_context={self.max_context}: this model reads at most {limit - 1} context "
                f"rows (its learned positions cover {limit} examples); lower max_context "
                "(iclab predict: --max-context)"
            )
        self.trained_ = trained
        self.scaling_ = Scaling.fit(X, getattr(trained.task.options, "clip", DEFAULT_CLIP))
        self.context_ = self.scaling_.apply(X)
        return X, y

    def _load(self) -> TrainedModel:
        trained = load_trained(self.bundled if self.run is None else self.run)
        if trained.task.kind != self.kind:
            raise ConfigError(
                f"run={self.run!r} is a {trained.task.kind} model; {type(self).__name__} needs a "
                f"{self.kind} model"
            )
        self._place(trained)
        return trained

    def _place(self, trained: TrainedModel) -> None:
        """The model on ``device`` in float64: a test row's answer must not move with the other
        rows of its pass (the rounding of float32 kernels depends on the sequence length)."""
        trained.model.to(self.device, torch.float64)

    @property
    def width_(self) -> int:
        """The columns the model reads (tables with fewer are zero-padded)."""
        return self.trained_.config.task.n_dims

    def _views(self, n_classes: int | None) -> None:
        self.views_ = draw_views(
            self.n_estimators,
            self.n_features_in_,
            self.width_,
            self.context_.shape[0],
            self.max_context,
            n_classes,
            check_random_state(self.random_state),
        )

    # predicting -------------------------------------------------------------------------------

    def _queries(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "views_")
        X = validate_data(
            self,
            encode(X, self.categorical_columns_, self.encoder_),
            reset=False,
            ensure_all_finite="allow-nan",
            dtype=np.float64,
        )
        return self.scaling_.apply(X)

    def _member_outputs(self, queries: np.ndarray, targets: np.ndarray) -> list[Tensor]:
        """Each view's model output for every query: (m,) values or (m, C) logits."""
        model, width = self.trained_.model, self.width_
        outputs = []
        for view in self.views_:
            context = view.features(self.context_[view.rows], width).to(self.device)
            labels = targets[view.rows]
            if view.classes is not None:
                labels = view.classes[labels]
            labels = torch.from_numpy(labels).to(self.device)
            features = view.features(queries, width).to(self.device)
            answers = [
                model.predict_queries(context[None], labels[None], block[None])[0].cpu()
                for block in features.split(QUERIES_PER_PASS)
            ]
            outputs.append(torch.cat(answers))
        return outputs

    # pickling: the model as safetensors bytes, never a pickled torch object ------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        trained = state.pop("trained_", None)
        if trained is not None:
            state["trained_"] = trained.to_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        data = state.pop("trained_", None)
        super().__setstate__(state)
        if data is not None:
            self.trained_ = TrainedModel.from_bytes(data, source="pickled estimator")
            self._place(self.trained_)


class InContextRegressor(RegressorMixin, InContextEstimator):
    """A regressor that learns each dataset in context: ``fit`` stores the rows, ``predict``
    runs the trained model with them as context (``n_estimators`` views averaged).

    Parameters
    ----------
    run: None (the bundled ``tabular_regression`` model), a bundled model's name, a run
        directory or a model file.
    n_estimators: ensemble members, each with its own order of rows and columns.
    max_context: the most training rows a member uses (a random subset past it).
    random_state: seeds the members' views.
    device: where the model runs (``cpu``, ``cuda``).
    """

    kind = "regression"
    bundled = "tabular_regression"

    def fit(self, X: Any, y: Any) -> InContextRegressor:
        X, y = self._fit_table(X, y)
        self.y_mean_ = float(y.mean())
        self.y_scale_ = float(y.std()) or 1.0
        self.targets_ = ((y - self.y_mean_) / self.y_scale_).astype(np.float64)
        self._views(None)
        return self

    def predict(self, X: Any) -> np.ndarray:
        outputs = self._member_outputs(self._queries(X), self.targets_)
        mean = torch.stack(outputs).mean(0).numpy()
        return mean * self.y_scale_ + self.y_mean_


class InContextClassifier(ClassifierMixin, InContextEstimator):
    """A classifier that learns each dataset in context: ``fit`` stores the rows,
    ``predict_proba`` averages the class probabilities of ``n_estimators`` views, each with
    its own order of rows and columns and its own relabelling of the classes.

    Parameters: as ``InContextRegressor``'s; ``run`` None is the bundled
    ``tabular_classification`` model, which tells up to its ``n_classes`` classes apart.
    """

    kind = "classification"
    bundled = "tabular_classification"

    def fit(self, X: Any, y: Any) -> InContextClassifier:
        X, y = self._fit_table(X, y)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        limit = self.trained_.task.n_classes
        if len(self.classes_) > limit:
            raise ValueError(
                f"y has {len(self.classes_)} classes; this model tells at most {limit} apart"
            )
        self.targets_ = encoded.reshape(-1).astype(np.int64)
        self._views(len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        outputs = self._member_outputs(self._queries(X), self.targets_)
        probabilities = torch.zeros(outputs[0].shape[0], len(self.classes_), dtype=torch.float64)
        for view, logits in zip(self.views_, outputs, strict=True):
            # the member's model class of each original class; the others are not classes here
            probabilities += logits[:, torch.as_tensor(view.classes)].softmax(-1)
        return (probabilities / len(outputs)).numpy()

    def predict(self, X: Any) -> np.ndarray:
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(1)]
