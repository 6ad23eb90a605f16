"""The one data structure every task produces and every learner consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

EpisodeKind = Literal["regression", "classification", "tokens"]


@dataclass
class Episode:
    """A batch of prompts drawn from one task.

    Attributes
    ----------
    inputs:
        ``(B, n, d)`` float for function-class tasks (``(B, T)`` long for token tasks).
    targets:
        ``(B, n)``: the value of the prompt's function at each input.
    kind:
        How targets are scored: ``regression`` (squared error), ``classification`` or ``tokens``.
    meta:
        The sampled task parameters (e.g. the true weights ``w`` of linear regression), so that
        Bayes-optimal learners and probes can use them. Tensors with batch as the first dimension.
    """

    inputs: Tensor
    targets: Tensor
    kind: EpisodeKind = "regression"
    meta: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_points(self) -> int:
        return self.inputs.shape[1]

    @property
    def n_dims(self) -> int:
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
        )

    def prefix(self, n_points: int) -> Episode:
        """The first ``n_points`` examples of every prompt (task parameters unchanged)."""
        return Episode(
            inputs=self.inputs[:, :n_points],
            targets=self.targets[:, :n_points],
            kind=self.kind,
            meta=self.meta,
        )
