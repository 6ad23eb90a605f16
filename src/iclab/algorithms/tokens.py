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
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from iclab.algorithms.base import (
    Algorithm,
    integer_option,
    positive_option,
    register_algorithm,
    reject_options,
)
from iclab.episode import Episode
from iclab.tasks.base import Task
from iclab.tasks.recall import MultiQueryRecall


def _check_tokens(episode: Episode, vocab_size: int | None, learner: str) -> int:
    """The vocabulary size, after checking that the episode holds token ids below it."""
    if episode.kind != "tokens" or episode.inputs.ndim != 2:
        raise ValueError(
            f"{learner} needs a token episode with (B, T) inputs, got a {episode.kind} episode "
            f"with inputs of shape {tuple(episode.inputs.shape)}"
        )
    if vocab_size is None:
        raise ValueError(
            f"{learner} needs the vocabulary size: build it with build_algorithm(spec, task) "
            "or pass vocab_size"
        )
    largest = max(int(episode.inputs.max()), int(episode.targets.max()))
    if largest >= vocab_size:
        raise ValueError(f"{learner}: token id {largest} is outside the vocabulary of {vocab_size}")
    return vocab_size


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


@register_algorithm("ngram")
class NGram(Algorithm):
    """In-context n-gram model with add-alpha smoothing and backoff (Akyürek et al. 2024).

    Counts, in the prompt so far, which tokens followed each earlier occurrence of the last
    ``n - 1`` tokens, and predicts the most frequent (ties: lowest token id). Akyürek et al. 2024
    (arXiv 2401.12973) find such in-context n-gram models strong baselines for in-context
    language learning; on ``mqar`` the bigram is exact (a key is followed by its value).

    Parameters
    ----------
    n:
        Order, an integer >= 1 (1: unigram frequencies, 2: bigram, 3: trigram).
    alpha:
        Add-alpha smoothing, a finite number > 0; it changes the log-probabilities, never the
        argmax of one order.
    backoff:
        Where the context of order n has not occurred yet, use order n - 1, and so on (True);
        or predict uniformly there (False).
    vocab_size:
        Set by ``for_task`` from the task's vocabulary; not an option.
    """

    applies_to = ("tokens",)

    def __init__(
        self, n: int = 2, alpha: float = 1.0, backoff: bool = True, *, vocab_size: int | None = None
    ) -> None:
        integer_option("ngram", "n", n)
        alpha = positive_option("ngram", "alpha", alpha)
        if not isinstance(backoff, bool):
            raise ValueError(f"ngram option backoff must be true or false, got {backoff!r}")
        self.n, self.alpha, self.backoff, self.vocab_size = n, float(alpha), backoff, vocab_size

    @classmethod
    def for_task(cls, task: Task, **options: Any) -> NGram:
        if task.kind != "tokens":
            raise ValueError(f"ngram needs a token task, not {task.name!r} ({task.kind})")
        if "vocab_size" in options:
            raise ValueError("ngram takes vocab_size from the task; it is not an option")
        return cls(**options, vocab_size=task.n_classes)

    def predict(self, episode: Episode) -> Tensor:
        vocab_size = _check_tokens(episode, self.vocab_size, "ngram")
        return prefix_ngram_log_probs(
            episode.inputs, episode.targets, self.n, vocab_size, self.alpha, self.backoff
        )


@register_algorithm("mqar_lookup")
class RecallLookup(Algorithm):
    """Exact recall: the token that followed the last earlier occurrence of the current token.

    100% at mqar queries. Log-probabilities 0 for that token and -inf for the others; uniform
    where the current token has not occurred before.

    Parameters
    ----------
    vocab_size:
        Set by ``for_task`` from the task's vocabulary; not an option.
    """

    applies_to = ("mqar",)

    def __init__(self, *, vocab_size: int | None = None) -> None:
        self.vocab_size = vocab_size

    @classmethod
    def for_task(cls, task: Task, **options: Any) -> RecallLookup:
        if not isinstance(task, MultiQueryRecall):
            raise ValueError(
                f"mqar_lookup needs an mqar task (keys followed by values), not {task.name!r}"
            )
        reject_options("mqar_lookup", options, "the vocabulary")
        return cls(vocab_size=task.n_classes)

    def predict(self, episode: Episode) -> Tensor:
        vocab_size = _check_tokens(episode, self.vocab_size, "mqar_lookup")
        permutation, group_start = _group_by_context(episode.inputs)
        index = torch.arange(permutation.shape[1], device=permutation.device)
        has_earlier = index > group_start  # the previous member of the group is earlier
        previous = torch.where(has_earlier, permutation.roll(1, dims=1), -1)
        previous = _unsort(previous, permutation)  # (B, T): last earlier position, or -1
        recalled = episode.targets.gather(1, previous.clamp(min=0))  # (B, T)
        log_probs = F.one_hot(recalled, vocab_size).float().log()
        uniform = torch.full_like(log_probs, -math.log(vocab_size))
        return torch.where((previous >= 0)[..., None], log_probs, uniform)
