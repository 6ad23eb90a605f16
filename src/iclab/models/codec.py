"""Codecs: episodes → token sequences → predictions. The backbone never sees a task.

One codec per episode kind (``codec_for``); each states how many sequence positions an example
takes, so the backbone can be sized for a prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iclab.tasks.base import Task


class InterleavedCodec(nn.Module):
    """Garg et al. 2022's codec for regression.

    The prompt (x1, y1, x2, y2, …) becomes 2n tokens of width d: x tokens as they are, y tokens
    as [y, 0, …, 0]. A linear read-in embeds them; the prediction of y_i is a linear read-out of
    the hidden state at x_i's position, which has seen x_1..x_i and y_1..y_{i-1}.
    """

    tokens_per_example = 2

    def __init__(self, n_dims: int, d_model: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(n_dims, d_model)
        self.read_out = nn.Linear(d_model, 1)

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """(B, n, d), (B, n) → (B, 2n, E)."""
        y_tokens = torch.zeros_like(inputs)
        y_tokens[..., 0] = targets
        tokens = torch.stack((inputs, y_tokens), dim=2).flatten(1, 2)  # x1, y1, x2, y2, …
        return self.read_in(tokens)

    def decode(self, hidden: Tensor) -> Tensor:
        """(B, 2n, E) → (B, n): predictions read at the x positions."""
        return self.read_out(hidden[:, 0::2]).squeeze(-1)


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


class TokenCodec(nn.Module):
    """A language-model codec: one embedding per token, next-token logits at every position."""

    tokens_per_example = 1

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.read_out = nn.Linear(d_model, vocab_size)

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """(B, T) long → (B, T, E); the targets are the inputs shifted, so they are not read."""
        return self.embedding(inputs)

    def decode(self, hidden: Tensor) -> Tensor:
        """(B, T, E) → (B, T, V) logits."""
        return self.read_out(hidden)


class PairedCodec(nn.Module):
    """von Oswald et al. 2023's tokens for regression: each example as a query token (x_i, 0)
    followed by its pair token (x_i, y_i), tokens of width d + 1.

    The prediction of y_i is read at the query token, which has seen the pairs of the examples
    before it (and their query tokens, whose y is 0). One linear self-attention layer on these
    tokens can implement a gradient-descent step exactly, which the interleaved codec (x and y in
    separate tokens) does not allow.
    """

    tokens_per_example = 2

    def __init__(self, n_dims: int, d_model: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(n_dims + 1, d_model)
        self.read_out = nn.Linear(d_model, 1)

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """(B, n, d), (B, n) → (B, 2n, E)."""
        pairs = torch.cat((inputs, targets[..., None]), dim=-1)  # (B, n, d + 1)
        queries = torch.cat((inputs, torch.zeros_like(targets)[..., None]), dim=-1)
        return self.read_in(torch.stack((queries, pairs), dim=2).flatten(1, 2))

    def decode(self, hidden: Tensor) -> Tensor:
        """(B, 2n, E) → (B, n): predictions read at the query tokens."""
        return self.read_out(hidden[:, 0::2]).squeeze(-1)


Codec = InterleavedCodec | LabelCodec | TokenCodec | PairedCodec


def codec_for(task: Task, d_model: int, regression_tokens: str = "interleaved") -> Codec:
    """The codec for a task's kind (for regression: interleaved or paired tokens)."""
    if task.kind == "regression":
        if regression_tokens == "paired":
            return PairedCodec(task.n_dims, d_model)
        return InterleavedCodec(task.n_dims, d_model)
    if task.kind == "classification":
        return LabelCodec(task.n_dims, task.n_classes, d_model)
    return TokenCodec(task.n_classes, d_model)
