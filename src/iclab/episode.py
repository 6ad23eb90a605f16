"""The one data structure every task produces and every learner consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

EpisodeKind = str  # a kind of iclab.kinds: regression, classification, tokens or decisions


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
    actions, rewards:
        ``(B, n)`` long and float, decision episodes only (``kind="decisions"``): the action
        taken at step i and the reward it earned, what the context shows after step i in place
        of a target. ``inputs`` holds the observation at each step and ``targets`` the action
        a learner is trained to take there (the optimal one, or a demonstrator's); a learner
        predicting step i may read ``actions[:, :i]`` and ``rewards[:, :i]``, never
        ``targets``.
    """

    inputs: Tensor
    targets: Tensor
    kind: EpisodeKind = "regression"
    meta: dict[str, Tensor] = field(default_factory=dict)
    loss_mask: Tensor | None = None
    actions: Tensor | None = None
    rewards: Tensor | None = None

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

    def per_position(self) -> dict[str, Tensor]:
        """The (B, n, ...) tensors other than ``meta``, by field name (None fields left out)."""
        fields = {"inputs": self.inputs, "targets": self.targets, "loss_mask": self.loss_mask}
        fields |= {"actions": self.actions, "rewards": self.rewards}
        return {name: value for name, value in fields.items() if value is not None}

    def to(self, device: torch.device | str) -> Episode:
        return replace(
            self,
            meta={key: value.to(device) for key, value in self.meta.items()},
            **{name: value.to(device) for name, value in self.per_position().items()},
        )

    def prefix(self, n_points: int) -> Episode:
        """The first ``n_points`` examples of every prompt (``meta`` is shared, not sliced)."""
        return replace(
            self, **{name: value[:, :n_points] for name, value in self.per_position().items()}
        )

    def first(self, n_prompts: int) -> Episode:
        """The first ``n_prompts`` prompts of the batch (``meta`` and ``loss_mask`` too)."""
        return self.rows(0, n_prompts)

    def rows(self, start: int, stop: int) -> Episode:
        """Prompts ``start`` to ``stop - 1`` of the batch (``meta`` and ``loss_mask`` too)."""
        return replace(
            self,
            meta={key: value[start:stop] for key, value in self.meta.items()},
            **{name: value[start:stop] for name, value in self.per_position().items()},
        )


def concatenate(episodes: list[Episode]) -> Episode:
    """The prompts of several episodes of one task as one batch (``meta`` and masks too)."""
    if len(episodes) == 1:
        return episodes[0]
    first = episodes[0]
    return replace(
        first,
        meta={key: torch.cat([episode.meta[key] for episode in episodes]) for key in first.meta},
        **{
            name: torch.cat([episode.per_position()[name] for episode in episodes])
            for name in first.per_position()
        },
    )
