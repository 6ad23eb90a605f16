"""How predictions are trained and scored, per episode kind.

=============== ================================ ============================================
kind            training loss                    score per position (the curve's metric)
=============== ================================ ============================================
regression      mean squared error               squared error / E[y²] (``task.target_scale``)
classification  cross-entropy of (B, n, C) logits accuracy of the top-scoring class
tokens          cross-entropy of (B, T, V) logits accuracy; with ``meta["valid_next"]`` a
                                                 prediction counts when it is *a* valid next
                                                 token (Akyürek et al. 2024's ICLL accuracy)
=============== ================================ ============================================

Positions outside ``episode.loss_mask`` are neither trained on nor scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from iclab.episode import Episode, EpisodeKind
from iclab.tasks.base import Task


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # axis label
    higher_is_better: bool


METRICS: dict[EpisodeKind, Metric] = {
    "regression": Metric("error", "squared error / E[y²]", higher_is_better=False),
    "classification": Metric("accuracy", "accuracy", higher_is_better=True),
    "tokens": Metric("accuracy", "next-token accuracy", higher_is_better=True),
}


def _check_prediction(prediction: Tensor, episode: Episode) -> None:
    expected = tuple(episode.targets.shape)
    got = tuple(prediction.shape)
    if episode.kind == "regression" and got != expected:
        raise ValueError(f"regression predictions must have shape {expected}, got {got}")
    if episode.kind != "regression" and (prediction.ndim != 3 or got[:2] != expected):
        raise ValueError(
            f"{episode.kind} predictions must have shape {(*expected, 'C')} (a score per "
            f"class), got {got}"
        )


def training_loss(prediction: Tensor, episode: Episode) -> Tensor:
    """The scalar loss a model is meta-trained on (averaged over the masked positions)."""
    _check_prediction(prediction, episode)
    if episode.kind == "regression":
        losses = (prediction - episode.targets).pow(2)
    else:
        losses = F.cross_entropy(prediction.transpose(1, 2), episode.targets, reduction="none")
    if episode.loss_mask is None:
        return losses.mean()
    mask = episode.loss_mask.to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def score(
    prediction: Tensor, episode: Episode, task: Task, target_scale: float | None = None
) -> Tensor:
    """(B, n) float64 score of every position; NaN where ``loss_mask`` excludes it. Squared
    errors are divided by ``target_scale`` (default ``task.target_scale``)."""
    _check_prediction(prediction, episode)
    if episode.kind == "regression":
        scale = task.target_scale if target_scale is None else target_scale
        values = (prediction.double() - episode.targets.double()).pow(2) / scale
    else:
        guess = prediction.argmax(-1)
        if "valid_next" in episode.meta:
            values = episode.meta["valid_next"].gather(-1, guess[..., None]).squeeze(-1)
        else:
            values = guess == episode.targets
        values = values.double()
    if episode.loss_mask is not None:
        values = values.masked_fill(~episode.loss_mask, torch.nan)
    return values
