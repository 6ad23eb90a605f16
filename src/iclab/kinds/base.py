"""What an episode kind provides: its codec, training loss, score and metric.

A kind is how a task's examples are written and judged: ``regression`` (a number per example),
``classification`` (a class per example) or ``tokens`` (a next token per position). Everything
that depends on the kind lives in its module here, so a new kind is one new module; tasks name
their kind, models build the kind's codec from the task's ``TaskIO``, and evaluation scores with
the kind's metric. This layer knows neither tasks nor configs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

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

    Set-style codecs (``model.tokens: set``) also have ``visible(length, device)``, the tokens
    later tokens may attend to (their queries are private), and ``pair_tokens``,
    ``query_tokens`` and ``read_queries``, with which a model answers many queries after one
    context in one pass (``InContextModel.predict_queries``).
    """

    tokens_per_example: int

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor: ...

    def decode(self, hidden: Tensor) -> Tensor: ...


class Kind(ABC):
    """One episode kind. ``losses`` and ``scores`` are per position (B, n); masking and
    averaging are the caller's (``iclab.metrics``)."""

    name: ClassVar[str]
    metric: ClassVar[Metric]
    codec_options: ClassVar[tuple[str, ...]] = ("interleaved",)  # values of model.tokens

    @abstractmethod
    def build_codec(self, io: TaskIO, d_model: int, tokens: str) -> nn.Module:
        """The codec for a task of this kind; ``tokens`` is ``model.tokens``."""

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
