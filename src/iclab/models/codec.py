"""Codecs: episodes → token sequences → predictions. The backbone never sees a task."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class InterleavedCodec(nn.Module):
    """Garg et al. 2022's codec for vector tasks.

    The prompt (x1, y1, x2, y2, …) becomes 2n tokens of width d: x tokens as they are, y tokens
    as [y, 0, …, 0]. A linear read-in embeds them; the prediction of y_i is a linear read-out of
    the hidden state at x_i's position, which has seen x_1..x_i and y_1..y_{i-1}.
    """

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
