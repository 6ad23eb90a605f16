"""A trained run as a function of one's own arrays: ``iclab.load(RUN).predict(x_context,
y_context, x_query)``.

Inputs may be NumPy arrays or torch tensors of any float dtype, one prompt or a batch of them,
with one query or several per prompt; every query sees the context only (never the other
queries), so a prediction does not depend on which other queries are asked. Shapes and sizes
are checked against the model with messages that say what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from iclab.errors import ConfigError
from iclab.models import InContextModel
from iclab.run import RunDir, load_trained_model


class Predictor:
    """A trained in-context learner over arrays (regression and classification models).

    ``predict`` returns values (regression) or class indices (classification), and
    ``predict_proba`` class probabilities; both in the type of ``x_query`` (NumPy in, NumPy
    out). Shapes, with k context examples of d features and m queries:

    ======================  ===============  ============  =================  ==========
    prompts                 x_context        y_context     x_query            result
    ======================  ===============  ============  =================  ==========
    one, one query          (k, d)           (k,)          (d,)               ()
    one, m queries          (k, d)           (k,)          (m, d)             (m,)
    B prompts, one query    (B, k, d)        (B, k)        (B, d)             (B,)
    B prompts, m queries    (B, k, d)        (B, k)        (B, m, d)          (B, m)
    ======================  ===============  ============  =================  ==========
    """

    def __init__(self, model: InContextModel, kind: str, n_dims: int, n_classes: int | None):
        if kind not in ("regression", "classification"):
            raise ConfigError(
                f"a {kind} model predicts from token ids, not arrays of features: use "
                "model.predict(episode) (iclab.load_trained_model)"
            )
        self.model, self.kind, self.n_dims, self.n_classes = model.eval(), kind, n_dims, n_classes
        self.device = next(model.parameters()).device

    def predict(self, x_context: Any, y_context: Any, x_query: Any) -> Any:
        scores = self._scores(x_context, y_context, x_query)
        result = scores if self.kind == "regression" else scores.argmax(-1)
        return self._like(result, x_query)

    def predict_proba(self, x_context: Any, y_context: Any, x_query: Any) -> Any:
        if self.kind != "classification":
            raise ConfigError("predict_proba is for classification models; this one regresses")
        return self._like(self._scores(x_context, y_context, x_query).softmax(-1), x_query)

    def _scores(self, x_context: Any, y_context: Any, x_query: Any) -> Tensor:
        x = as_tensor(x_context, "x_context")
        y = as_tensor(y_context, "y_context")
        q = as_tensor(x_query, "x_query")
        batched = x.ndim == 3
        if x.ndim not in (2, 3):
            raise ConfigError(f"x_context must be (k, d) or (B, k, d), got shape {tuple(x.shape)}")
        allowed = {3: ("(B, d)", "(B, m, d)"), 2: ("(d,)", "(m, d)")}[x.ndim]
        if q.ndim not in (x.ndim - 1, x.ndim):
            raise ConfigError(
                f"x_query must be {' or '.join(allowed)} for x_context of shape "
                f"{tuple(x.shape)}: one set of queries per prompt; got {tuple(q.shape)}"
            )
        if not batched:
            x, y, q = x[None], y[None], q[None]
        single_query = q.ndim == 2
        if single_query:
            q = q[:, None]
        self._check(x, y, q)
        if self.kind == "classification":
            y = y.round().long()
        scores = self.model.predict_queries(x.to(self.device), y.to(self.device), q.to(self.device))
        if single_query:
            scores = scores[:, 0]
        return scores if batched else scores[0]

    def _check(self, x: Tensor, y: Tensor, q: Tensor) -> None:
        if x.shape[-1] != self.n_dims or q.shape[-1] != self.n_dims:
            raise ConfigError(
                f"the model reads {self.n_dims} features per example; x_context has "
                f"{x.shape[-1]} and x_query {q.shape[-1]}"
            )
        if y.shape != x.shape[:2]:
            raise ConfigError(
                f"y_context must have one target per context example: x_context "
                f"{tuple(x.shape)} needs y_context {tuple(x.shape[:2])}, got {tuple(y.shape)}"
            )
        if q.shape[0] != x.shape[0]:
            raise ConfigError(
                f"x_query has {q.shape[0]} prompts and x_context {x.shape[0]}: one set of queries "
                "per prompt"
            )
        if self.kind == "classification":
            labels = y.round()
            if (labels != y).any() or labels.min() < 0 or labels.max() >= self.n_classes:
                raise ConfigError(
                    f"y_context must hold class indices 0..{self.n_classes - 1} for this model"
                )
        self.model.check_points(x.shape[1] + 1)

    @staticmethod
    def _like(result: Tensor, reference: Any) -> Any:
        """``result`` as NumPy when the queries came as NumPy (or a list), else as a tensor."""
        if isinstance(reference, Tensor):
            return result
        return result.cpu().numpy()


def as_tensor(values: Any, name: str) -> Tensor:
    """A float32 CPU tensor from an array-like of numbers, or a clear error naming it."""
    try:
        array = (
            values.detach().cpu()
            if isinstance(values, Tensor)
            else torch.from_numpy(np.asarray(values, dtype=np.float64))
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be an array of numbers: {error}") from None
    if not torch.is_floating_point(array) and array.dtype not in (torch.int32, torch.int64):
        raise ConfigError(f"{name} must hold numbers, got {array.dtype}")
    array = array.to(torch.float32)
    if not torch.isfinite(array).all():
        raise ConfigError(f"{name} holds NaN or infinite values")
    return array


def load(run_dir: str | Path, device: str = "cpu") -> Predictor:
    """The newest checkpoint of a trained run, ready for ``predict(x_context, y_context,
    x_query)`` on arrays."""
    config = RunDir(Path(run_dir)).load_config()
    task = config.task.build()
    model = load_trained_model(Path(run_dir), device)
    return Predictor(model, task.kind, task.n_dims, task.n_classes)
