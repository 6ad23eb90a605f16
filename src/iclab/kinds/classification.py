"""Classification: a class per example, trained by cross-entropy, scored by accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclab.episode import Episode
from iclab.kinds.base import Kind, Metric, SetTokens, TaskIO, check_scores_shape


class LabelCodec(nn.Module):
    """Interleaved codec for classification: x tokens by a linear read-in, label tokens by an
    embedding table (labels are categories, not magnitudes), and class logits read out at the
    x positions, as in Garg et al.'s layout."""

    tokens_per_example = 2

    def __init__(self, n_dims: int, n_classes: int, d_model: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(n_dims, d_model)
        self.label_embedding = nn.Embedding(n_classes, d_model)
        self.read_out = nn.Linear(d_model, n_classes)

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """(B, n, d), (B, n) long → (B, 2n, E)."""
        x_tokens, y_tokens = self.read_in(inputs), self.label_embedding(targets)
        return torch.stack((x_tokens, y_tokens), dim=2).flatten(1, 2)

    def decode(self, hidden: Tensor) -> Tensor:
        """(B, 2n, E) → (B, n, C) logits."""
        return self.read_out(hidden[:, 0::2])


class SetLabelCodec(SetTokens):
    """Set-style tokens for classification (``SetTokens``): a query token x_i plus a learned
    query vector, then the pair token x_i plus its label's embedding."""

    def __init__(self, n_dims: int, n_classes: int, d_model: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(n_dims, d_model)
        self.label_embedding = nn.Embedding(n_classes, d_model)
        self.query_embedding = nn.Parameter(torch.zeros(d_model))
        self.read_out = nn.Linear(d_model, n_classes)

    def pair_tokens(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self.read_in(inputs) + self.label_embedding(targets)

    def query_tokens(self, inputs: Tensor) -> Tensor:
        return self.read_in(inputs) + self.query_embedding

    def read_queries(self, hidden: Tensor) -> Tensor:
        return self.read_out(hidden)


def cross_entropy(prediction: Tensor, episode: Episode) -> Tensor:
    """(B, n) cross-entropy of (B, n, C) logits."""
    return F.cross_entropy(prediction.transpose(1, 2), episode.targets, reduction="none")


class Classification(Kind):
    name = "classification"
    metric = Metric("accuracy", "accuracy", higher_is_better=True)
    codec_options = ("interleaved", "set")

    def build_codec(self, io: TaskIO, d_model: int, tokens: str) -> nn.Module:
        self.check_tokens(tokens)
        codec = SetLabelCodec if tokens == "set" else LabelCodec
        return codec(io.n_dims, io.n_classes, d_model)

    def check_prediction(self, prediction: Tensor, episode: Episode) -> None:
        check_scores_shape(prediction, episode)

    def losses(self, prediction: Tensor, episode: Episode) -> Tensor:
        return cross_entropy(prediction, episode)

    def scores(self, prediction: Tensor, episode: Episode, target_scale: float) -> Tensor:
        return (prediction.argmax(-1) == episode.targets).double()

    def chance(self, io: TaskIO) -> float | None:
        return 1.0 / io.n_classes  # a uniform guess
