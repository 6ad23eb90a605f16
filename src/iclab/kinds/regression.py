"""Regression: a real number per example, trained by squared error, scored by squared error
divided by E[y²] (so predicting 0 scores 1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iclab.episode import Episode
from iclab.kinds.base import Kind, Metric, SetTokens, TaskIO


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


class LaggedCodec(nn.Module):
    """One token per example: token i is (x_i, y_{i−1}), y_0 written as 0, and the prediction
    of y_i is read at token i. A causal model sees at token i exactly what Garg et al.'s
    interleaved layout shows at x_i's token (x_1..x_i and y_1..y_{i−1}), in half the sequence:
    half the matmul work and a quarter of the attention's."""

    tokens_per_example = 1

    def __init__(self, n_dims: int, d_model: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(n_dims + 1, d_model)
        self.read_out = nn.Linear(d_model, 1)

    def encode(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """(B, n, d), (B, n) → (B, n, E)."""
        previous = torch.cat((torch.zeros_like(targets[:, :1]), targets[:, :-1]), dim=1)
        return self.read_in(torch.cat((inputs, previous[..., None]), dim=-1))

    def decode(self, hidden: Tensor) -> Tensor:
        """(B, n, E) → (B, n)."""
        return self.read_out(hidden).squeeze(-1)


class SetCodec(SetTokens):
    """Set-style tokens for regression (``SetTokens``): a query token (x_i, 0, 0), then the
    pair token (x_i, y_i, 1)."""

    def __init__(self, n_dims: int, d_model: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(n_dims + 2, d_model)
        self.read_out = nn.Linear(d_model, 1)

    def pair_tokens(self, inputs: Tensor, targets: Tensor) -> Tensor:
        ones = torch.ones_like(targets)[..., None]
        return self.read_in(torch.cat((inputs, targets[..., None], ones), dim=-1))

    def query_tokens(self, inputs: Tensor) -> Tensor:
        return self.read_in(torch.cat((inputs, inputs.new_zeros(*inputs.shape[:-1], 2)), -1))

    def read_queries(self, hidden: Tensor) -> Tensor:
        return self.read_out(hidden).squeeze(-1)


class Regression(Kind):
    name = "regression"
    metric = Metric("error", "squared error / E[y²]", higher_is_better=False)
    codec_options = ("interleaved", "paired", "lagged", "set")

    def build_codec(self, io: TaskIO, d_model: int, tokens: str) -> nn.Module:
        self.check_tokens(tokens)
        codecs = {
            "interleaved": InterleavedCodec,
            "paired": PairedCodec,
            "lagged": LaggedCodec,
            "set": SetCodec,
        }
        return codecs[tokens](io.n_dims, d_model)

    def check_prediction(self, prediction: Tensor, episode: Episode) -> None:
        expected, got = tuple(episode.targets.shape), tuple(prediction.shape)
        if got != expected:
            raise ValueError(f"regression predictions must have shape {expected}, got {got}")

    def losses(self, prediction: Tensor, episode: Episode) -> Tensor:
        return (prediction - episode.targets).pow(2)

    def scores(self, prediction: Tensor, episode: Episode, target_scale: float) -> Tensor:
        return (prediction.double() - episode.targets.double()).pow(2) / target_scale

    def reference_k(self, n_dims: int | None) -> int | None:
        return n_dims  # least squares is exact from d noiseless examples on

    def chance(self, io: TaskIO) -> float | None:
        return 1.0  # predicting 0: squared error / E[y²] = 1
