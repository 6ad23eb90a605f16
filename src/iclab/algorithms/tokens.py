"""Reference learners for token episodes (next-token prediction), batched over every prefix.

The prediction at position ``t`` uses ``inputs[:, : t + 1]`` and ``targets[:, :t]`` (the tokens
that followed the earlier positions). Both learners below group positions by their context (the
last tokens up to and including ``t``) with one stable sort per prompt; within a group, earlier
positions come first, so exclusive cumulative sums and "the previous member" give every prefix
at once in O(B·T·V) work and memory, without a (B, T, T) match matrix. Outputs are (B, T, V)
log-probabilities on the episode's device; ``argmax`` breaks ties towards the lowest token id.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from iclab.algorithms.base import Algorithm, AlgorithmOptions, register_algorithm
from iclab.episode import Episode
from iclab.tasks.base import Task

# The log-probability of a token a learner is sure will not come: the lowest finite float32 (as
# for the Boolean learners), not -inf, so that sums and differences of scores stay defined.
_IMPOSSIBLE = torch.finfo(torch.float32).min


def _check_tokens(episode: Episode, vocab_size: int, learner: str) -> None:
    """A clear error unless the episode holds (B, T) token ids below ``vocab_size``."""
    if episode.kind != "tokens" or episode.inputs.ndim != 2:
        raise ValueError(
            f"{learner} needs a token episode with (B, T) inputs, got a {episode.kind} episode "
            f"with inputs of shape {tuple(episode.inputs.shape)}"
        )
    largest = max(int(episode.inputs.max()), int(episode.targets.max()))
    if largest >= vocab_size:
        raise ValueError(f"{learner}: token id {largest} is outside the vocabulary of {vocab_size}")


def context_ids(inputs: Tensor, order: int) -> Tensor:
    """(B, T) long: equal at ``t`` and ``j`` of a prompt iff the ``order - 1`` tokens ending
    there are equal; positions with fewer tokens before them get ids of their own (negative).

    Order 1 is the empty context, shared by all positions. Ids are re-numbered after each added
    token (``torch.unique``), so they never overflow, whatever the vocabulary and order.
    """
    length = inputs.shape[1]
    ids = torch.zeros_like(inputs)
    for lag in range(order - 1):
        token = torch.zeros_like(inputs)
        token[:, lag:] = inputs[:, : length - lag]
        ids = torch.unique(ids * (int(inputs.max()) + 1) + token, return_inverse=True)[1]
    position = torch.arange(length, device=inputs.device)
    return torch.where(position >= order - 2, ids, -1 - position)


def _group_by_context(ids: Tensor) -> tuple[Tensor, Tensor]:
    """The permutation that stably sorts each row of ``ids`` (B, T) and, at every sorted
    position, the sorted index where its group of equal ids starts."""
    sorted_ids, permutation = torch.sort(ids, dim=1, stable=True)
    index = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    starts_group = torch.ones_like(ids, dtype=torch.bool)
    starts_group[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    group_start = torch.where(starts_group, index, 0).cummax(dim=1).values
    return permutation, group_start


def _unsort(values: Tensor, permutation: Tensor) -> Tensor:
    """Put ``values`` (B, T, ...) given in sorted order back at their positions."""
    index = permutation.view(*permutation.shape, *([1] * (values.ndim - 2))).expand_as(values)
    return torch.empty_like(values).scatter_(1, index, values)


def prefix_next_token_counts(
    inputs: Tensor, targets: Tensor, order: int, vocab_size: int
) -> Tensor:
    """(B, T, V) float: ``counts[b, t, v] = #{j < t : context_j = context_t, targets[b, j] = v}``,
    with contexts of ``order - 1`` tokens (``context_ids``)."""
    permutation, group_start = _group_by_context(context_ids(inputs, order))
    next_tokens = F.one_hot(targets.gather(1, permutation), vocab_size).float()  # sorted order
    before = next_tokens.cumsum(dim=1) - next_tokens  # exclusive cumulative counts
    counts = before - before.gather(1, group_start[..., None].expand_as(before))
    return _unsort(counts, permutation)


def prefix_ngram_log_probs(
    inputs: Tensor, targets: Tensor, n: int, vocab_size: int, alpha: float, backoff: bool
) -> Tensor:
    """(B, T, V) log-probabilities of an in-context n-gram model with add-``alpha`` smoothing.

    ``P(v | context) = (count(context, v) + α) / (count(context) + α V)`` over the pairs
    (context, next token) of the prefix. With ``backoff`` the model of order n is used where its
    context has occurred before, else order n - 1, and so on down to the unigram (uniform before
    any token has a known successor); without it, an unseen context gives the uniform
    distribution.
    """
    log_probs, decided = None, None
    for order in range(n, 0, -1) if backoff else (n,):
        counts = prefix_next_token_counts(inputs, targets, order, vocab_size)
        total = counts.sum(-1, keepdim=True)
        order_log_probs = ((counts + alpha) / (total + alpha * vocab_size)).log()
        if log_probs is None:
            log_probs, decided = order_log_probs, total > 0
        else:  # positions whose higher-order contexts were all unseen back off to this order
            log_probs = torch.where(decided, log_probs, order_log_probs)
            decided = decided | (total > 0)
    return log_probs


def prefix_recall(inputs: Tensor, targets: Tensor, vocab_size: int) -> Tensor:
    """(B, T, V) log-probabilities: 0 for the token that followed the last earlier occurrence of
    the current token, ``_IMPOSSIBLE`` for the others; uniform where the current token is new."""
    permutation, group_start = _group_by_context(inputs)
    index = torch.arange(permutation.shape[1], device=permutation.device)
    has_earlier = index > group_start  # the previous member of the group is earlier
    previous = torch.where(has_earlier, permutation.roll(1, dims=1), -1)
    previous = _unsort(previous, permutation)  # (B, T): last earlier position, or -1
    recalled = F.one_hot(targets.gather(1, previous.clamp(min=0)), vocab_size).bool()
    sure = torch.where(recalled, 0.0, _IMPOSSIBLE)  # (B, T, V)
    uniform = torch.full_like(sure, -math.log(vocab_size))
    return torch.where((previous >= 0)[..., None], sure, uniform)


class NGramOptions(AlgorithmOptions):
    n: int = Field(2, ge=1, description="order: 1 unigram frequencies, 2 bigram, 3 trigram")
    alpha: float = Field(
        1.0,
        gt=0,
        description="add-alpha smoothing; changes the log-probabilities, never the argmax of one "
        "order",
    )
    backoff: bool = Field(
        True,
        description="where the context of order n has not occurred yet, use order n - 1, and so "
        "on (true), or predict uniformly there (false)",
    )


@register_algorithm("ngram")
class NGram(Algorithm):
    """In-context n-gram model with add-alpha smoothing and backoff (Akyürek et al. 2024).

    Counts, in the prompt so far, which tokens followed each earlier occurrence of the last
    ``n - 1`` tokens, and predicts the most frequent (ties: lowest token id). Akyürek et al. 2024
    (arXiv 2401.12973) find such in-context n-gram models strong baselines for in-context
    language learning; on ``mqar`` the bigram is exact (a key is followed by its value). The
    vocabulary is the task's.
    """

    Options = NGramOptions
    options: NGramOptions
    applies_to = ("tokens",)

    def __init__(self, task: Task, options: NGramOptions | None = None) -> None:
        super().__init__(task, options)
        self.vocab_size: int = task.n_classes

    def predict(self, episode: Episode) -> Tensor:
        _check_tokens(episode, self.vocab_size, "ngram")
        n, alpha, backoff = self.options.n, self.options.alpha, self.options.backoff
        return prefix_ngram_log_probs(
            episode.inputs, episode.targets, n, self.vocab_size, alpha, backoff
        )


@register_algorithm("mqar_lookup")
class RecallLookup(Algorithm):
    """Exact recall: the token that followed the last earlier occurrence of the current token.

    100% at mqar queries. Log-probabilities 0 for that token and the lowest float32 for the
    others; uniform where the current token has not occurred before (``prefix_recall``). The
    vocabulary is the task's.
    """

    applies_to = ("mqar",)

    def __init__(self, task: Task, options: AlgorithmOptions | None = None) -> None:
        super().__init__(task, options)
        self.vocab_size: int = task.n_classes

    def predict(self, episode: Episode) -> Tensor:
        _check_tokens(episode, self.vocab_size, "mqar_lookup")
        return prefix_recall(episode.inputs, episode.targets, self.vocab_size)
