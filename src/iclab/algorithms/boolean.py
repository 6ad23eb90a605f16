"""Exact learners for Boolean function classes (Bhattamishra et al. 2023, arXiv 2310.03016).

The paper compares Transformers with the optimal learners of two classes: the elimination
algorithm for conjunctions / disjunctions (which the models nearly match) and Gaussian
elimination over GF(2) for parities (which they do not approach). Both are deterministic, so
their scores are the log-probabilities of a learner sure of its label: 0 for the predicted
class, the lowest finite float32 for the other.

Inputs are bits (B, n, d) as 0/1 floats, targets (B, n) long in {0, 1}; the prediction at
position ``i`` uses ``inputs[:, : i + 1]`` and ``targets[:, :i]`` only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from iclab.algorithms.base import Algorithm, AlgorithmOptions, register_algorithm
from iclab.episode import Episode
from iclab.tasks.base import Task

# Which formula elimination builds for each family it applies to.
ELIMINATION_FORM = {
    "conjunction": "conjunction",
    "disjunction": "disjunction",
    "sparse_disjunction": "disjunction",
}


def check_bit_episode(episode: Episode) -> tuple[Tensor, Tensor]:
    """The episode's inputs and labels as bools, after a clear error for anything but a binary
    classification episode with 0/1 inputs."""
    if episode.kind != "classification" or episode.inputs.ndim != 3:
        raise ValueError(
            f"Boolean learners need a classification episode with inputs (B, n, d), got a "
            f"{episode.kind} episode with inputs {tuple(episode.inputs.shape)}"
        )
    inputs, targets = episode.inputs, episode.targets
    if not ((inputs == 0) | (inputs == 1)).all() or not ((targets == 0) | (targets == 1)).all():
        raise ValueError("Boolean learners need inputs and targets in {0, 1}")
    return inputs > 0.5, targets == 1


def sure_log_probabilities(labels: Tensor) -> Tensor:
    """(B, n) bool predictions → (B, n, 2) float32 log-probabilities of a certain learner."""
    lowest = torch.finfo(torch.float32).min
    positive = torch.where(labels, 0.0, lowest)
    negative = torch.where(labels, lowest, 0.0)
    return torch.stack([negative, positive], dim=-1)


def _exclusive_cumulative_any(values: Tensor) -> Tensor:
    """``out[:, i] = values[:, :i].any(dim=1)`` for every i (False at i = 0)."""
    seen = values.cumsum(dim=1) > 0
    return torch.cat([torch.zeros_like(seen[:, :1]), seen[:, :-1]], dim=1)


def prefix_elimination_literals(inputs: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """The literals the elimination algorithm keeps after the examples before each position.

    Start from all 2d literals x_k and ¬x_k; a positive example falsifies x_k where its bit is 0
    and ¬x_k where it is 1, and those literals are removed. Returns the surviving positive and
    negated literals, (B, n, d) bool each, for ``inputs`` (B, n, d) bool and ``positive``
    (B, n) bool (which examples are positive).
    """
    positive = positive[..., None]
    kept_positive = ~_exclusive_cumulative_any(positive & ~inputs)
    kept_negative = ~_exclusive_cumulative_any(positive & inputs)
    return kept_positive, kept_negative


def prefix_elimination(inputs: Tensor, targets: Tensor, form: str) -> Tensor:
    """Predictions (B, n) bool of the elimination algorithm for every prefix.

    ``conjunction``: predict the AND of the surviving literals, the most specific conjunction
    consistent with the positive examples (so never a false positive on a conjunction; with no
    positive example yet, x_k ∧ ¬x_k survive and every prediction is 0). ``disjunction``: the
    dual, since ¬(l_1 ∨ … ∨ l_k) = ¬l_1 ∧ … ∧ ¬l_k: run the conjunction learner on the negated
    labels and negate its prediction (never a false negative on a disjunction).
    """
    learn_positive = targets if form == "conjunction" else ~targets
    kept_positive, kept_negative = prefix_elimination_literals(inputs, learn_positive)
    violated = (kept_positive & ~inputs) | (kept_negative & inputs)
    conjunction = ~violated.any(-1)
    return conjunction if form == "conjunction" else ~conjunction


def _insert_row(basis: Tensor, row: Tensor) -> Tensor:
    """Add one equation to reduced row echelon bases over GF(2), for a batch at once.

    ``basis`` (B, d, d + 1) holds in row p the equation whose pivot is variable p, or zeros if no
    equation has that pivot; every basis row is zero at the other pivots (reduced form), and its
    leading entry is its pivot. ``row`` (B, d + 1) is [x | y]. Entries are 0/1 floats; sums stay
    far below 2^24, so float32 matrix products are exact before the ``% 2``.
    """
    d = basis.shape[1]
    # Reduce against every pivot at once: basis rows are zero at each other's pivots, so
    # subtracting row p for every pivot p with row[p] = 1 clears exactly those entries.
    reduced = (row + torch.einsum("bp,bpc->bc", row[:, :d], basis)) % 2
    is_new = reduced[:, :d].any(dim=1)  # rank grows (rows reducing to [0 | 1] are inconsistent)
    pivot = reduced[:, :d].argmax(dim=1)  # first non-zero column: a variable with no pivot yet
    rows = torch.arange(basis.shape[0], device=basis.device)
    column = basis[rows, :, pivot]  # (B, d): which basis rows have a 1 at the new pivot
    eliminated = (basis + column[:, :, None] * reduced[:, None, :]) % 2
    eliminated[rows, pivot] = reduced
    return torch.where(is_new[:, None, None], eliminated, basis)


def prefix_parity_solutions(inputs: Tensor, targets: Tensor) -> Tensor:
    """For every prefix, a parity consistent with the examples before it: (B, n, d) bool subsets.

    Incremental Gaussian elimination over GF(2), one example per step (a loop over positions
    only, vectorised over the batch: O(n d²) per prompt). The solution sets the free variables
    to 0, so in reduced row echelon form variable p is the right-hand side of row p (0 where
    no row has pivot p). The reduced form of a row space is unique, so this equals solving
    each prefix from scratch. Equations inconsistent with the earlier ones (noisy labels) are
    skipped.
    """
    batch, n, d = inputs.shape
    rows = torch.cat([inputs, targets[..., None]], dim=-1).float()  # (B, n, d + 1)
    basis = torch.zeros(batch, d, d + 1, device=inputs.device)
    solutions = []
    for i in range(n):
        solutions.append(basis[:, :, d])
        basis = _insert_row(basis, rows[:, i])
    return torch.stack(solutions, dim=1) > 0.5


def prefix_gf2_elimination(inputs: Tensor, targets: Tensor) -> Tensor:
    """Predictions (B, n) bool: the parity of ``x_i`` over the subset consistent so far."""
    subsets = prefix_parity_solutions(inputs, targets)
    return (inputs & subsets).sum(-1) % 2 == 1


class EliminationOptions(AlgorithmOptions):
    form: Literal["conjunction", "disjunction"] | None = Field(
        None,
        description="formula to build; null: the task's (disjunction for disjunction and "
        "sparse_disjunction, conjunction for conjunction)",
    )


@register_algorithm("elimination")
class Elimination(Algorithm):
    """Elimination algorithm (Valiant 1984): the most specific conjunction (disjunction) fitting.

    Every prefix at once with cumulative ORs over the examples.
    """

    Options = EliminationOptions
    options: EliminationOptions
    applies_to = tuple(ELIMINATION_FORM)

    def __init__(self, task: Task, options: EliminationOptions | None = None) -> None:
        super().__init__(task, options)
        self.form = self.options.form or ELIMINATION_FORM[task.name]

    def predict(self, episode: Episode) -> Tensor:
        inputs, targets = check_bit_episode(episode)
        return sure_log_probabilities(prefix_elimination(inputs, targets, self.form))


@register_algorithm("gf2_elimination")
class GF2Elimination(Algorithm):
    """Gaussian elimination over GF(2): a parity consistent with the examples (free bits 0).

    Incremental: each example is folded into a reduced row echelon basis, batched over prompts,
    one step per position. Exact once the examples span GF(2)^d.
    """

    applies_to = ("sparse_parity", "parity")

    def predict(self, episode: Episode) -> Tensor:
        inputs, targets = check_bit_episode(episode)
        return sure_log_probabilities(prefix_gf2_elimination(inputs, targets))
