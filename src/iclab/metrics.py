"""How predictions are trained and scored: the episode's kind (``iclab.kinds``) gives the loss and
the metric of every position; positions outside ``episode.loss_mask`` are neither trained on nor
scored.

=============== ================================ ============================================
kind            training loss                    score per position (the curve's metric)
=============== ================================ ============================================
regression      mean squared error               squared error / E[y²] (``task.target_scale``)
classification  cross-entropy of (B, n, C) logits accuracy of the top-scoring class
tokens          cross-entropy of (B, T, V) logits accuracy; with ``meta["valid_next"]`` a
                                                 prediction counts when it is *a* valid next
                                                 token (Akyürek et al. 2024's ICLL accuracy)
decisions       cross-entropy of (B, n, K) logits regret of the top-scoring action (best
                on the action to take            expected reward − the chosen one's); online:
                                                 cumulative regret, suboptimal pulls
=============== ================================ ============================================
"""

from __future__ import annotations

import torch
from torch import Tensor

from iclab.episode import Episode
from iclab.kinds import KINDS, Kind, Metric, kind_of
from iclab.kinds.decisions import ONLINE_METRICS

METRICS: dict[str, Metric] = {name: kind.metric for name, kind in KINDS.items()}


def condition_metric(kind: Kind, condition: str) -> Metric:
    """What an evaluation condition's curves measure (the ``shift`` column): the kind's
    metric, except online rollouts' (``iclab.kinds.decisions.ONLINE_METRICS``)."""
    return ONLINE_METRICS.get(condition, kind.metric)


def condition_title(condition: str) -> str:
    """A condition in words: ``shift: SPEC``, or what an online condition shows."""
    if condition in ONLINE_METRICS:
        return f"online, the learners acting: {ONLINE_METRICS[condition].label}"
    return f"shift: {condition}"


def target_reached(stopped: dict) -> str:
    """A ``train.stop_at`` target met, as run.json records it: ``error 0.038 ≤ 0.05 after 10
    examples``."""
    metric = next(metric for metric in METRICS.values() if metric.name == stopped["metric"])
    relation = "≥" if metric.higher_is_better else "≤"
    return (
        f"{metric.name} {stopped['score']:.4g} {relation} {stopped['target']:g} after "
        f"{stopped['k']} examples"
    )


def training_loss(prediction: Tensor, episode: Episode, last_only: bool = False) -> Tensor:
    """The scalar loss a model is meta-trained on (averaged over the masked positions; with
    ``last_only``, over the last position's, ``train.loss_on=last``)."""
    kind = kind_of(episode.kind)
    kind.check_prediction(prediction, episode)
    losses = kind.losses(prediction, episode)
    if last_only:
        losses = losses[:, -1:]
    mask = trained_positions(episode, last_only)
    if mask is None:
        return losses.mean()
    mask = mask.to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def trained_positions(episode: Episode, last_only: bool = False) -> Tensor | None:
    """The (B, n) or, with ``last_only``, (B, 1) mask of the positions ``training_loss``
    averages over; None: all of them."""
    if episode.loss_mask is None or not last_only:
        return episode.loss_mask
    return episode.loss_mask[:, -1:]


def loss_share(part: Episode, whole: Episode, last_only: bool = False) -> Tensor | float:
    """The share of ``whole``'s trained positions that ``part`` (some of its prompts) holds:
    the weight that makes the parts' ``training_loss`` sum to the whole batch's. Without a
    loss mask every prompt holds as many, so it is a ratio of prompts (no tensor made)."""
    mask = trained_positions(part, last_only)
    if mask is None:
        return part.batch_size / whole.batch_size
    return mask.sum() / trained_positions(whole, last_only).sum().clamp(min=1)


def score(prediction: Tensor, episode: Episode, target_scale: float = 1.0) -> Tensor:
    """(B, n) float64 score of every position; NaN where ``loss_mask`` excludes it. Squared
    errors are divided by ``target_scale`` (a task's E[y²], ``Task.target_scale``).

    A position whose prediction is not finite (a diverged model) scores the worst value, an
    infinite error or zero accuracy: NaN means "not scored", and a broken prediction is scored.
    """
    kind = kind_of(episode.kind)
    kind.check_prediction(prediction, episode)
    values = kind.scores(prediction, episode, target_scale)
    broken = ~prediction.isfinite()
    if broken.dim() > values.dim():  # logits: one broken class breaks the position
        broken = broken.flatten(values.dim()).any(-1)
    worst = 0.0 if kind.metric.higher_is_better else torch.inf
    values = values.masked_fill(broken.to(values.device), worst)
    if episode.loss_mask is not None:
        values = values.masked_fill(~episode.loss_mask, torch.nan)
    return values
