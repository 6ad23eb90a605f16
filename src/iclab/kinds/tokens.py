"""Tokens: next-token prediction at every position, trained by cross-entropy, scored by accuracy;
with ``meta["valid_next"]`` a prediction counts when it is *a* valid next token (Akyürek et al.
2024's ICLL accuracy)."""

from __future__ import annotations

from torch import Tensor, nn

from iclab.episode import Episode
from iclab.kinds.base import Kind, Metric, TaskIO, check_scores_shape
from iclab.kinds.classification import cross_entropy


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


class Tokens(Kind):
    name = "tokens"
    metric = Metric("accuracy", "next-token accuracy", higher_is_better=True)

    def build_codec(self, io: TaskIO, d_model: int, tokens: str) -> nn.Module:
        self.check_tokens(tokens)
        return TokenCodec(io.n_classes, d_model)

    def check_prediction(self, prediction: Tensor, episode: Episode) -> None:
        check_scores_shape(prediction, episode)

    def losses(self, prediction: Tensor, episode: Episode) -> Tensor:
        return cross_entropy(prediction, episode)

    def scores(self, prediction: Tensor, episode: Episode, target_scale: float) -> Tensor:
        guess = prediction.argmax(-1)
        if "valid_next" in episode.meta:
            return episode.meta["valid_next"].gather(-1, guess[..., None]).squeeze(-1).double()
        return (guess == episode.targets).double()

    def describe_sizes(self, n_dims: int | None, n_points: int) -> str:
        return f"{n_points} tokens"
