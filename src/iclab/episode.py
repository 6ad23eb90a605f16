"""The one data structure every task produces and every learner consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

EpisodeKind = str  # a kind of iclab.kinds: "regression", "classification" or "tokens"


@dataclass
class Episode:
    """A batch of prompts drawn from one task.

    Attributes
    ----------
    inputs:
        ``(B, n, d)`` float for vector tasks (regression, classification); ``(B, T)`` long token
        ids for token tasks.
    targets:
        ``(B, n)``: float values (regression), long class indices (classification), or the long
        id of the next token (tokens: ``targets[:, t]`` follows ``inputs[:, t]``).
    kind:
        How predictions are scored: ``regression`` (squared error of a ``(B, n)`` prediction),
        ``classification`` / ``tokens`` (accuracy of ``(B, n, C)`` scores, one per class/token).
    loss_mask:
        ``(B, n)`` bool, the positions that are trained on and scored (``None``: all of them);
        e.g. only the query of a bursty classification prompt, only the answers of MQAR.
    meta:
        The sampled task parameters (e.g. the true weights ``w`` of linear regression), so that
        Bayes-optimal learners, metrics and probes can use them. Tensors with batch first.
    """

    inputs: Tensor
    targets: Tensor
    kind: EpisodeKind = "regression"
    meta: dict[str, Tensor] = field(default_factory=dict)
    loss_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_points(self) -> int:
        """Examples per prompt (tokens per sequence for token tasks)."""
        return self.inputs.shape[1]

    @property
    def n_dims(self) -> int:
        if self.inputs.ndim != 3:
            raise ValueError(f"a {self.kind} episode of token ids has no input dimension")
        return self.inputs.shape[2]

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def to(self, device: torch.device | str) -> Episode:
        return Episode(
            inputs=self.inputs.to(device),
            targets=self.targets.to(device),
            kind=self.kind,
            meta={key: value.to(device) for key, value in self.meta.items()},
            loss_mask=None if self.loss_mask is None else self.loss_mask.to(device),
        )

    def prefix(self, n_points: int) -> Episode:
        """The first ``n_points`` examples of every prompt (``meta`` is shared, not sliced)."""
        return Episode(
            inputs=self.inputs[:, :n_points],
            targets=self.targets[:, :n_points],
            kind=self.kind,
            meta=self.meta,
            loss_mask=None if self.loss_mask is None else self.loss_mask[:, :n_points],
        )

    def first(self, n_prompts: int) -> Episode:
        """The first ``n_prompts`` prompts of the batch (``meta`` and ``loss_mask`` too)."""
        return self.rows(0, n_prompts)

    def rows(self, start: int, stop: int) -> Episode:
        """Prompts ``start`` to ``stop - 1`` of the batch (``meta`` and ``loss_mask`` too)."""
        return Episode(
            inputs=self.inputs[start:stop],
            targets=self.targets[start:stop],
            kind=self.kind,
            meta={key: value[start:stop] for key, value in self.meta.items()},
            loss_mask=None if self.loss_mask is None else self.loss_mask[start:stop],
        )


def concatenate(episodes: list[Episode]) -> Episode:
    """The prompts of several episodes of one task as one batch (``meta`` and masks too)."""
    if len(episodes) == 1:
        return episodes[0]
    first = episodes[0]
    masks = [episode.loss_mask for episode in episodes]
    return Episode(
        inputs=torch.cat([episode.inputs for episode in episodes]),
        targets=torch.cat([episode.targets for episode in episodes]),
        kind=first.kind,
        meta={key: torch.cat([episode.meta[key] for episode in episodes]) for key in first.meta},
        loss_mask=None if masks[0] is None else torch.cat(masks),
    )
