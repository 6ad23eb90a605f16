"""What an episode kind provides: its codec, training loss, score and metric.

A kind is how a task's examples are written and judged: ``regression`` (a number per example),
``classification`` (a class per example), ``tokens`` (a next token per position) or
``decisions`` (an action per step of an interaction history). Everything
that depends on the kind lives in its module here, so a new kind is one new module; tasks name
their kind, models build the kind's codec from the task's ``TaskIO``, and evaluation scores with
the kind's metric. This layer knows neither tasks nor configs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from iclab.episode import Episode
from iclab.errors import ConfigError


@dataclass(frozen=True)
class TaskIO:
    """What a model needs to know of a task: its kind, the width of its inputs (None for token
    ids) and the number of classes or tokens it predicts (None for regression)."""

    kind: str
    n_dims: int | None = None
    n_classes: int | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # axis label
    higher_is_better: bool


class Codec(Protocol):
    """Episodes → token sequences (``encode``) and hidden states → predictions (``decode``);
    an example takes ``tokens_per_example`` sequence positions.

    Set-style codecs (``model.tokens: set``) are ``SetTokens``.
    """

    tokens_per_example: int

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor: ...

    def decode(self, hidden: Tensor) -> Tensor: ...


class SetTokens(nn.Module):
    """What the set-style codecs share (``model.tokens: set``): each example is a query token
    then its pair token, and query tokens are private (``visible``): a query sees the pairs
    before it and itself only, never another query. Subclasses make the tokens
    (``pair_tokens``, ``query_tokens``) and read the answers (``read_queries``).

    With a model that has no positions (softmax attention with ``positions=none``) a query
    depends on the pairs' contents and not on where the queries sit, so
    ``InContextModel.predict_queries`` puts any number of queries after one context and answers
    them all in one pass, each as if it were the only one: the layout of TabPFN-style tabular
    learners (Hollmann et al. 2023), with the context causal so that training still scores every
    prefix in one pass.
    """

    tokens_per_example = 2

    def pair_tokens(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """(B, k, d), (B, k) → (B, k, E)."""
        raise NotImplementedError

    def query_tokens(self, inputs: Tensor) -> Tensor:
        """(B, m, d) → (B, m, E)."""
        raise NotImplementedError

    def read_queries(self, hidden: Tensor) -> Tensor:
        """(B, m, E) hidden states of query tokens → (B, m) values or (B, m, C) logits."""
        raise NotImplementedError

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """(B, n, d), (B, n) → (B, 2n, E): q1, p1, q2, p2, …"""
        pairs, queries = self.pair_tokens(inputs, targets), self.query_tokens(inputs)
        return torch.stack((queries, pairs), dim=2).flatten(1, 2)

    def decode(self, hidden: Tensor) -> Tensor:
        """(B, 2n, E) → predictions read at the query tokens."""
        return self.read_queries(hidden[:, 0::2])

    def visible(self, length: int, device: torch.device) -> Tensor:
        """(length,) bool: which tokens of ``encode``'s layout later tokens may attend to."""
        return torch.arange(length, device=device) % 2 == 1


class Kind(ABC):
    """One episode kind. ``losses`` and ``scores`` are per position (B, n); masking and
    averaging are the caller's (``iclab.metrics``)."""

    name: ClassVar[str]
    metric: ClassVar[Metric]
    codec_options: ClassVar[tuple[str, ...]] = ("interleaved",)  # values of model.tokens
    position_label: ClassVar[str] = "in-context examples k"  # the x axis of curves
    headline: ClassVar[str] = "none"  # the evaluation condition a run's one-line result quotes

    @abstractmethod
    def build_codec(self, io: TaskIO, d_model: int, tokens: str) -> nn.Module:
        """The codec for a task of this kind; ``tokens`` is ``model.tokens``."""

    def encode(self, codec: nn.Module, episode: Episode) -> Tensor:
        """The episode as the codec's tokens (B, T, E): inputs, and the targets the context
        shows after each example."""
        return codec.encode(episode.inputs, episode.targets)

    @abstractmethod
    def check_prediction(self, prediction: Tensor, episode: Episode) -> None:
        """A ValueError when ``prediction`` has the wrong shape for ``episode``."""

    @abstractmethod
    def losses(self, prediction: Tensor, episode: Episode) -> Tensor:
        """(B, n) training loss of every position."""

    @abstractmethod
    def scores(self, prediction: Tensor, episode: Episode, target_scale: float) -> Tensor:
        """(B, n) float64 metric of every position."""

    def describe_sizes(self, n_dims: int | None, n_points: int) -> str:
        """``d=5, 21 points``: a task's size in words."""
        return f"d={n_dims}, {n_points} points"

    def reference_k(self, n_dims: int | None) -> int | None:
        """A prefix length marked in plots (k = d for regression), or None."""
        return None

    def chance(self, io: TaskIO) -> float | None:
        """The score of a learner that ignores its context (predicting 0; a uniform guess),
        what a model that learned nothing in context scores; None where it is not a number."""
        return None

    def check_tokens(self, tokens: str) -> None:
        if tokens not in self.codec_options:
            raise ConfigError(
                f"model.tokens={tokens!r} does not apply to {self.name} tasks "
                f"(allowed: {', '.join(self.codec_options)})"
            )


def check_scores_shape(prediction: Tensor, episode: Episode) -> None:
    """Shape check of kinds that predict a score per class: (B, n, C)."""
    expected, got = tuple(episode.targets.shape), tuple(prediction.shape)
    if prediction.ndim != 3 or got[:2] != expected:
        raise ValueError(
            f"{episode.kind} predictions must have shape {(*expected, 'C')} (a score per "
            f"class), got {got}"
        )
