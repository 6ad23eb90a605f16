"""The one interface shared by trained models and classical algorithms."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from iclab.episode import Episode


@runtime_checkable
class InContextLearner(Protocol):
    """Anything that predicts each example of a prompt from the examples before it.

    ``predict`` returns, for every position ``i``, a prediction of ``episode.targets[:, i]`` that
    uses only ``inputs[:, : i + 1]`` and ``targets[:, :i]``: shape ``episode.targets.shape`` for
    regression, ``episode.targets.shape + (C,)`` scores (logits or log-probabilities) for
    classification and tokens. A model does this in one causal forward pass; an algorithm does
    it for all prefixes at once, batched.
    """

    name: str

    def predict(self, episode: Episode) -> Tensor: ...
