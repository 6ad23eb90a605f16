"""Boolean function classes of Bhattamishra, Patel, Blunsom, Kanade 2023 (arXiv 2310.03016).

Inputs are bit vectors x ∈ {0, 1}^d (float tensors of 0s and 1s), labels y = f(x) ∈ {0, 1}, and a
prompt holds the examples of one function f drawn from the family's class. Everything samples
in a handful of tensor operations on the generator's device; ``episode.meta`` holds the function
(literal masks, subsets, weights), so the labels can be recomputed from it.

Settings, and where they come from
----------------------------------
The paper's public code (``satwik77/incontext-bool``, ``src/bool_tasks.py`` and ``src/args.py``,
read through the ``search`` tool's code index) works in the ±1 encoding; here bit 1 is +1 and
bit 0 is −1, so every class below is the same function class and the same input distribution:

* n = 28 input bits (``args.py``: ``-n_dims`` default 28; the README's training command also
  passes ``-n_dims 28``). Prompt length: the paper reports 70 examples for the n = 28 classes
  and 140 for the parity classes, run at n = 10 (Table 1 of the paper as we recall it: the
  stored copies of the paper's text could not be searched down to that table; the code's own
  ``-curriculum_points_*`` default is 40 and a comment in ``train.py`` uses 80).
* Conjunctions / disjunctions: each variable is left out with probability 0.7, else appears as
  a positive or a negated literal with probability 0.15 each. Uniform inputs would make a
  conjunction almost always false, so "to make a more balanced dataset" each example is, with
  probability 0.3, overwritten to satisfy the conjunction (for disjunctions: to falsify it).
* Sparse disjunctions: exactly 4 positive literals; the same 0.3 falsifying overwrite.
* DNF / CNF: 3 terms (clauses); per term a variable is left out with probability 0.8, else
  positive or negated with probability 0.1 each. For DNF one term per prompt is chosen and each
  example satisfies it with probability 0.35; for CNF one clause is chosen and each example
  falsifies it with probability 0.3.
* Sparse parities: k = 2 variables; parities: a uniformly random subset of all 2^n; uniform x.
* Majority: each variable in the subset with probability 0.3; y = 1 iff the subset has more
  ones than zeros (ties and the empty subset give 0); uniform x.
* 0-1 threshold functions (``SparseThreshold``): weights in {−1, 0, +1} with probabilities
  0.15, 0.7, 0.15 and a threshold θ drawn uniformly from {−2.5, −1.5, …, 2.5}; y = 1 iff
  Σ w_i s_i > θ with s = 2x − 1; uniform x.
* Integer halfspaces: w uniform on {−3, …, 3}^n; y = 1 iff w·s − 0.5 > 0 with s = 2x − 1;
  uniform x.

A curriculum's ``n_dims_active`` restricts the function to the first variables and zeroes the
other input bits.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from pydantic import Field
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.tasks.base import Task, TaskOptions, register_task

PAPER = "Bhattamishra, Patel, Blunsom, Kanade 2023, arXiv 2310.03016"
BASELINES = ("knn(k=1)", "majority_label")


# ---------------------------------------------------------------------------------------------
# Shared pieces: literals, planting, evaluation, random subsets.


def sample_literals(
    shape: tuple[int, ...], literal_prob: float, active: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Positive and negated literal masks, each ``shape + (d,)`` bool and disjoint.

    Every active variable appears with probability ``literal_prob``, positive or negated with
    equal chance (the paper's 0.15 / 0.15 for ``literal_prob = 0.3``).
    """
    u = torch.rand(*shape, active.shape[0], generator=generator, device=generator.device)
    positive = (u < literal_prob / 2) & active
    negative = (u >= literal_prob / 2) & (u < literal_prob) & active
    return positive, negative


def literal_truth(inputs: Tensor, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
    """Per example and variable, whether a literal is present and true, and present and false.

    ``inputs`` (B, n, d) bool; ``positive`` / ``negative`` (B, d) bool masks of one formula, or
    (B, T, d) of T terms (clauses). Returns two (B, n, d) or (B, n, T, d) bool tensors.
    """
    if positive.ndim == 3:
        inputs = inputs[:, :, None]  # (B, n, 1, d) against (B, 1, T, d)
    positive, negative = positive[:, None], negative[:, None]
    return (positive & inputs) | (negative & ~inputs), (positive & ~inputs) | (negative & inputs)


def conjunction_holds(inputs: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """AND of the literals (true for no literals): (B, n) or (B, n, T) bool."""
    _, false = literal_truth(inputs, positive, negative)
    return ~false.any(-1)


def disjunction_holds(inputs: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """OR of the literals (false for no literals): (B, n) or (B, n, T) bool."""
    true, _ = literal_truth(inputs, positive, negative)
    return true.any(-1)


def plant(
    inputs: Tensor,
    positive: Tensor,
    negative: Tensor,
    planted_prob: float,
    value: bool,
    generator: torch.Generator,
) -> Tensor:
    """With probability ``planted_prob`` per example, set every literal of (B, d) masks to
    ``value``: True satisfies a conjunction (term), False falsifies a disjunction (clause).

    This is the paper's rebalancing of the input distribution; without it a conjunction of ~8
    literals is almost never true on uniform inputs.
    """
    batch, n_points, _ = inputs.shape
    planted = torch.rand(batch, n_points, 1, generator=generator, device=generator.device)
    planted = planted < planted_prob  # (B, n, 1)
    inputs = torch.where(planted & positive[:, None], value, inputs)
    return torch.where(planted & negative[:, None], not value, inputs)


def random_subset_of_size(
    batch_size: int, size: int, active: Tensor, generator: torch.Generator
) -> Tensor:
    """(B, d) bool masks with exactly ``size`` active variables, uniformly at random."""
    scores = torch.rand(batch_size, active.shape[0], generator=generator, device=generator.device)
    scores = scores.masked_fill(~active, 2.0)  # inactive variables are never among the smallest
    chosen = scores.argsort(dim=-1)[:, :size]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter(1, chosen, True)


def random_subset(
    batch_size: int, prob: float, active: Tensor, generator: torch.Generator
) -> Tensor:
    """(B, d) bool masks holding every active variable independently with probability ``prob``."""
    u = torch.rand(batch_size, active.shape[0], generator=generator, device=generator.device)
    return (u < prob) & active


def signs(inputs: Tensor) -> Tensor:
    """Bits as the paper's ±1 values: s = 2x − 1, float."""
    return inputs.float() * 2 - 1


# ---------------------------------------------------------------------------------------------
# The base class.


class BooleanTask(Task):
    """Shared sampling of the Boolean families: uniform bits, the family's function, labels.

    Subclasses draw the function (``sample_function``), may reshape the input distribution
    (``balance_inputs``) and compute labels (``evaluate``, which also recomputes a batch's
    targets from ``episode.meta``).
    """

    kind = "classification"
    paper = PAPER
    default_n_dims = 28
    default_n_points = 70
    yardsticks = BASELINES

    @property
    def n_classes(self) -> int:
        return 2

    @abstractmethod
    def sample_function(
        self, batch_size: int, active: Tensor, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """One function per prompt, over the variables where ``active`` (d,) is True."""

    @abstractmethod
    def evaluate(self, inputs: Tensor, function: dict[str, Tensor]) -> Tensor:
        """Labels (B, n) bool of bit inputs (B, n, d) (bool or 0/1 float)."""

    def label(self, inputs: Tensor, meta: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        return self.evaluate(inputs, meta).long()

    def balance_inputs(
        self, inputs: Tensor, function: dict[str, Tensor], generator: torch.Generator
    ) -> Tensor:
        """The paper's change of input distribution for the family; uniform by default."""
        return inputs

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        device = generator.device
        n_active = self.n_dims if n_dims_active is None else min(n_dims_active, self.n_dims)
        active = torch.arange(self.n_dims, device=device) < n_active
        function = self.sample_function(batch_size, active, generator)
        shape = (batch_size, n_points, self.n_dims)
        inputs = torch.rand(*shape, generator=generator, device=device) < 0.5
        inputs = self.balance_inputs(inputs & active, function, generator)
        targets = self.evaluate(inputs, function)
        return Episode(
            inputs=inputs.float(), targets=targets.long(), kind="classification", meta=function
        )


def as_bits(inputs: Tensor) -> Tensor:
    """0/1 floats or bools → bool."""
    return inputs if inputs.dtype == torch.bool else inputs > 0.5


# ---------------------------------------------------------------------------------------------
# Conjunctions and disjunctions.


class LiteralOptions(TaskOptions):
    literal_prob: float = Field(
        0.3, gt=0.0, le=1.0, description="probability a variable appears (positive or negated)"
    )
    planted_prob: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="probability an example is overwritten to satisfy a conjunction (falsify "
        "a disjunction), the paper's rebalancing of labels",
    )


class LiteralFormulaTask(BooleanTask):
    """A single AND or OR of literals; ``is_conjunction`` says which."""

    Options = LiteralOptions
    options: LiteralOptions
    is_conjunction: bool = True
    yardsticks = ("elimination", *BASELINES)

    def sample_function(self, batch_size, active, generator):
        positive, negative = sample_literals(
            (batch_size,), self.options.literal_prob, active, generator
        )
        return {"positive_literals": positive, "negative_literals": negative}

    def balance_inputs(self, inputs, function, generator):
        return plant(
            inputs,
            function["positive_literals"],
            function["negative_literals"],
            self.options.planted_prob,
            value=self.is_conjunction,
            generator=generator,
        )

    def evaluate(self, inputs, function):
        holds = conjunction_holds if self.is_conjunction else disjunction_holds
        return holds(as_bits(inputs), function["positive_literals"], function["negative_literals"])


@register_task("conjunction")
class Conjunction(LiteralFormulaTask):
    """Conjunctions of literals (~30% of variables, half negated), 30% of inputs made positive.

    Bhattamishra et al. 2023 (arXiv 2310.03016), n = 28, 70 examples: Transformers come close to
    the elimination algorithm, the optimal PAC learner, needing O(n) examples. Meta:
    ``positive_literals`` / ``negative_literals`` (B, d) bool. See the module docstring for the
    source of every setting.
    """


@register_task("disjunction")
class Disjunction(LiteralFormulaTask):
    """Disjunctions of literals (~30% of variables, half negated), 30% of inputs made negative.

    Bhattamishra et al. 2023 (arXiv 2310.03016): the dual of conjunctions, learned as well.
    Meta: ``positive_literals`` / ``negative_literals`` (B, d) bool.
    """

    is_conjunction = False


class SparseDisjunctionOptions(TaskOptions):
    n_literals: int = Field(4, ge=1, description="positive literals in the disjunction")
    planted_prob: float = Field(
        0.3, ge=0.0, le=1.0, description="probability an example is overwritten to falsify it"
    )


@register_task("sparse_disjunction")
class SparseDisjunction(LiteralFormulaTask):
    """Disjunctions of exactly 4 positive literals (monotone), 30% of inputs made negative.

    Bhattamishra et al. 2023 (arXiv 2310.03016), the code's ``SparseDisjunction`` with k = 4.
    Meta: ``positive_literals`` / ``negative_literals`` (B, d) bool (no negated literals).
    """

    Options = SparseDisjunctionOptions
    options: SparseDisjunctionOptions
    is_conjunction = False

    def __init__(self, n_dims=None, options=None) -> None:
        super().__init__(n_dims, options)
        if self.options.n_literals > self.n_dims:
            raise ConfigError(
                f"sparse_disjunction option n_literals ({self.options.n_literals}) must be at "
                f"most n_dims ({self.n_dims})"
            )

    def sample_function(self, batch_size, active, generator):
        n_literals = min(self.options.n_literals, int(active.sum()))
        positive = random_subset_of_size(batch_size, n_literals, active, generator)
        return {"positive_literals": positive, "negative_literals": torch.zeros_like(positive)}


# ---------------------------------------------------------------------------------------------
# DNF and CNF.


class NormalFormOptions(TaskOptions):
    n_terms: int = Field(3, ge=1, description="terms of the DNF / clauses of the CNF")
    literal_prob: float = Field(
        0.2, gt=0.0, le=1.0, description="probability a variable appears in a term / clause"
    )


class DNFOptions(NormalFormOptions):
    planted_prob: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="probability an example is overwritten to satisfy the prompt's chosen term",
    )


class CNFOptions(NormalFormOptions):
    planted_prob: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="probability an example is overwritten to falsify the prompt's chosen clause",
    )


class NormalFormTask(BooleanTask):
    """An OR of ANDs (DNF) or an AND of ORs (CNF); one term (clause) per prompt is planted."""

    is_dnf: bool = True

    def sample_function(self, batch_size, active, generator):
        positive, negative = sample_literals(
            (batch_size, self.options.n_terms), self.options.literal_prob, active, generator
        )
        planted_term = torch.randint(
            self.options.n_terms, (batch_size,), generator=generator, device=generator.device
        )
        return {
            "positive_literals": positive,  # (B, T, d)
            "negative_literals": negative,
            "planted_term": planted_term,  # (B,): the term (clause) the input distribution favours
        }

    def balance_inputs(self, inputs, function, generator):
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        term = function["planted_term"]
        return plant(
            inputs,
            function["positive_literals"][rows, term],
            function["negative_literals"][rows, term],
            self.options.planted_prob,
            value=self.is_dnf,
            generator=generator,
        )

    def evaluate(self, inputs, function):
        positive, negative = function["positive_literals"], function["negative_literals"]
        if self.is_dnf:
            return conjunction_holds(as_bits(inputs), positive, negative).any(-1)
        return disjunction_holds(as_bits(inputs), positive, negative).all(-1)


@register_task("dnf")
class DNF(NormalFormTask):
    """3-term DNFs (each term: ~20% of variables, half negated); 35% of inputs satisfy a term.

    Bhattamishra et al. 2023 (arXiv 2310.03016): "3-DNF", which Transformers learn only in part.
    Meta: ``positive_literals`` / ``negative_literals`` (B, T, d) bool, ``planted_term`` (B,).
    """

    Options = DNFOptions
    options: DNFOptions


@register_task("cnf")
class CNF(NormalFormTask):
    """3-clause CNFs (each clause: ~20% of variables, half negated); 30% of inputs break one.

    Bhattamishra et al. 2023 (arXiv 2310.03016): "3-CNF", the dual of 3-DNF. Meta:
    ``positive_literals`` / ``negative_literals`` (B, T, d) bool, ``planted_term`` (B,) (the
    clause the input distribution falsifies).
    """

    Options = CNFOptions
    options: CNFOptions
    is_dnf = False


# ---------------------------------------------------------------------------------------------
# Parities.


class ParityTask(BooleanTask):
    """y = XOR of the bits in a subset (``meta["subset"]``, (B, d) bool)."""

    default_n_dims = 10
    default_n_points = 140
    yardsticks = ("gf2_elimination", *BASELINES)

    def evaluate(self, inputs, function):
        return (as_bits(inputs) & function["subset"][:, None]).sum(-1) % 2 == 1


class SparseParityOptions(TaskOptions):
    k: int = Field(2, ge=1, description="variables in the parity")


@register_task("sparse_parity")
class SparseParity(ParityTask):
    """Sparse parities: XOR of k = 2 random bits of uniform inputs (n = 10, 140 examples).

    Bhattamishra et al. 2023 (arXiv 2310.03016), the code's ``SparseParity`` (k = 2): Transformers
    stay at chance even though Gaussian elimination over GF(2) solves it from ~n examples. Meta:
    ``subset`` (B, d) bool.
    """

    Options = SparseParityOptions
    options: SparseParityOptions

    def __init__(self, n_dims=None, options=None) -> None:
        super().__init__(n_dims, options)
        if self.options.k > self.n_dims:
            raise ConfigError(
                f"sparse_parity option k ({self.options.k}) must be at most n_dims ({self.n_dims})"
            )

    def sample_function(self, batch_size, active, generator):
        k = min(self.options.k, int(active.sum()))
        return {"subset": random_subset_of_size(batch_size, k, active, generator)}


@register_task("parity")
class Parity(ParityTask):
    """Parities of a uniformly random subset of the bits (all 2^n parities), uniform inputs.

    Bhattamishra et al. 2023 (arXiv 2310.03016), the code's ``Parity``: the subset is uniform
    over all 2^n subsets (each variable in with probability 1/2). Meta: ``subset`` (B, d) bool.
    """

    def sample_function(self, batch_size, active, generator):
        return {"subset": random_subset(batch_size, 0.5, active, generator)}


# ---------------------------------------------------------------------------------------------
# Majority, thresholds and halfspaces: linear threshold functions in the ±1 encoding.


class LinearThresholdTask(BooleanTask):
    """y = [Σ w_i s_i > θ] with s = 2x − 1; ``meta["weights"]`` (B, d) and the family's θ."""

    def threshold(self, function: dict[str, Tensor]) -> Tensor:
        """θ per prompt, (B,)."""
        return function["threshold"]

    def evaluate(self, inputs, function):
        margin = torch.einsum("bnd,bd->bn", signs(as_bits(inputs)), function["weights"].float())
        return margin > self.threshold(function)[:, None]


class MajorityOptions(TaskOptions):
    subset_prob: float = Field(
        0.3, gt=0.0, le=1.0, description="probability a variable is in the voting subset"
    )


@register_task("majority")
class Majority(LinearThresholdTask):
    """Majority of a random subset (each variable in with probability 0.3); ties give 0.

    Bhattamishra et al. 2023 (arXiv 2310.03016), the code's ``Majority``: y = [Σ_{i∈S} s_i > 0.5].
    Meta: ``weights`` (B, d), the subset's indicator as 0/1 floats.
    """

    Options = MajorityOptions
    options: MajorityOptions

    def sample_function(self, batch_size, active, generator):
        subset = random_subset(batch_size, self.options.subset_prob, active, generator)
        return {"weights": subset.float()}

    def threshold(self, function):
        return torch.full_like(function["weights"][:, 0], 0.5)


class ThresholdOptions(TaskOptions):
    weight_prob: float = Field(
        0.3, gt=0.0, le=1.0, description="probability a variable has weight ±1 (else 0)"
    )
    threshold_bound: int = Field(
        3, ge=1, description="θ is uniform on {−b + 0.5, …, b − 0.5} for this b"
    )


@register_task("threshold")
class Threshold(LinearThresholdTask):
    """0-1 threshold functions: weights in {−1, 0, 1}, y = [Σ w_i s_i > θ], θ ∈ {±0.5, …, ±2.5}.

    Bhattamishra et al. 2023 (arXiv 2310.03016), the code's ``SparseThreshold``: each weight is
    ±1 with probability 0.15 each (0 otherwise); θ is uniform on {−2.5, …, 2.5}; uniform inputs.
    Meta: ``weights`` (B, d) float, ``threshold`` (B,) float.
    """

    Options = ThresholdOptions
    options: ThresholdOptions

    def sample_function(self, batch_size, active, generator):
        positive, negative = sample_literals(
            (batch_size,), self.options.weight_prob, active, generator
        )
        bound = self.options.threshold_bound
        offset = torch.randint(
            -bound, bound, (batch_size,), generator=generator, device=generator.device
        )
        return {"weights": positive.float() - negative.float(), "threshold": offset + 0.5}


class IntegerHalfspaceOptions(TaskOptions):
    k: int = Field(3, ge=1, description="weights are uniform integers in {−k, …, k}")


@register_task("integer_halfspace")
class IntegerHalfspace(LinearThresholdTask):
    """Integer halfspaces: w uniform on {−3, …, 3}^n, y = [w·s − 0.5 > 0], s = 2x − 1.

    Bhattamishra et al. 2023 (arXiv 2310.03016), the code's ``IntHalfspace`` (bound 3), run at
    n = 20 in the paper (Table 1 as we recall it). Meta: ``weights`` (B, d) float.
    """

    Options = IntegerHalfspaceOptions
    options: IntegerHalfspaceOptions
    default_n_dims = 20

    def sample_function(self, batch_size, active, generator):
        k = self.options.k
        weights = torch.randint(
            -k, k + 1, (batch_size, active.shape[0]), generator=generator, device=generator.device
        )
        return {"weights": weights.float() * active}

    def threshold(self, function):
        return torch.full_like(function["weights"][:, 0], 0.5)
