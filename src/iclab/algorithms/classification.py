"""Reference learners for classification episodes, each batched over every prefix at once.

Every learner maps ``inputs`` (B, n, d) and long ``targets`` (B, n) to log-probabilities
(B, n, C): row ``i`` uses only ``inputs[:, : i + 1]`` and ``targets[:, :i]``. With no example the
scores are uniform; a class absent from the first ``i`` labels gets the lowest score (a
score of -3.4e38, the lowest finite float32, so that sums and differences stay defined), since no
learner here can tell it apart. Ties in the argmax are broken by a stated rule, never by the
sorting kernel. Numerics run in float64; scores come back as float32 on the episode's device.

k-nearest-neighbour voting lives here too; the registered ``knn`` (``iclab.algorithms.
regression``) dispatches to it on classification episodes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from iclab.algorithms.base import Algorithm, AlgorithmOptions, register_algorithm
from iclab.algorithms.neighbours import earlier_neighbours
from iclab.episode import Episode
from iclab.tasks.base import Task

# The score of a class no example has shown: below every other score, finite even in float32.
_UNSEEN = torch.finfo(torch.float32).min

# Damped Newton for logistic regression: step sizes tried per iteration, the stopping rule on
# the squared Newton decrement gᵀH⁻¹g (about twice the gap to the optimum; with a weight
# penalty alpha >= 1e-2 it bounds the weights' error by ~1e-6), and an iteration cap.
_STEP_SIZES = tuple(0.5**j for j in range(12))
_NEWTON_DECREMENT_TOL = 1e-14
_ARMIJO = 1e-4
_MAX_NEWTON_STEPS = 100


def check_classification_episode(inputs: Tensor, targets: Tensor, n_classes: int) -> None:
    """A clear error unless inputs are (B, n, d) and targets (B, n) long in [0, n_classes)."""
    if inputs.ndim != 3 or targets.shape != inputs.shape[:2]:
        raise ValueError(
            "classification learners need inputs (B, n, d) and targets (B, n); "
            f"got inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}"
        )
    if targets.dtype != torch.long:
        raise ValueError(f"classification targets must be long class indices, got {targets.dtype}")
    if targets.numel() and (targets.min() < 0 or targets.max() >= n_classes):
        raise ValueError(f"classification targets must lie in [0, {n_classes})")


def _seen_counts(targets: Tensor, n_classes: int) -> Tensor:
    """(B, n, C) float64: how often each class occurs among ``targets[:, :i]``."""
    one_hot = F.one_hot(targets, n_classes).double()
    counts = one_hot.cumsum(dim=1)
    return torch.cat([torch.zeros_like(counts[:, :1]), counts[:, :-1]], dim=1)


def _log_probabilities(scores: Tensor, allowed: Tensor) -> Tensor:
    """Log-softmax of ``scores`` over the ``allowed`` classes; the others get ``_UNSEEN``. With
    no class allowed every score is equal, hence uniform."""
    masked = scores.masked_fill(~allowed, _UNSEEN)
    return torch.log_softmax(masked, dim=-1).clamp_min(_UNSEEN).float()


def _prefer(counts: Tensor, priority: Tensor) -> Tensor:
    """``counts`` (B, n, C) with half a count added, where several classes share the top count,
    to the one of highest ``priority``: integer counts then have a unique maximum, and are
    otherwise unchanged."""
    is_top = counts == counts.amax(dim=-1, keepdim=True)
    winner = priority.masked_fill(~is_top, -math.inf).argmax(dim=-1)
    is_tie = is_top.sum(-1, keepdim=True) > 1
    return counts + 0.5 * F.one_hot(winner, counts.shape[-1]) * is_tie


def prefix_majority(targets: Tensor, n_classes: int) -> Tensor:
    """Log of the label frequencies among ``targets[:, :i]``; among equally frequent labels the
    one that appeared first wins (as ``collections.Counter.most_common`` orders them)."""
    counts = _seen_counts(targets, n_classes)
    n = targets.shape[1]
    positions = torch.arange(n, device=targets.device).expand_as(targets)
    first_seen = torch.full(
        (targets.shape[0], n_classes), n, dtype=torch.long, device=targets.device
    ).scatter_reduce(1, targets, positions, reduce="amin")  # (B, C)
    preferred = _prefer(counts, -first_seen[:, None, :].double())
    seen = counts > 0
    return _log_probabilities(preferred.clamp_min(1).log(), seen)


def prefix_knn_vote(inputs: Tensor, targets: Tensor, k: int, n_classes: int) -> Tensor:
    """Majority vote of the labels of the ``k`` nearest earlier inputs, for every prefix.

    Scores are the log vote shares (fewer voters while fewer than ``k`` earlier points exist);
    among classes with equally many votes the one holding the nearest neighbour wins; classes
    without a vote get the lowest score; with no earlier point the scores are uniform.
    """
    check_classification_episode(inputs, targets, n_classes)
    batch, n = targets.shape
    nearest, is_earlier = earlier_neighbours(inputs, k)
    labels = targets[:, None, :].expand(batch, n, n).gather(-1, nearest)  # (B, n, k')
    votes = torch.zeros(batch, n, n_classes, dtype=torch.float64, device=targets.device)
    votes.scatter_add_(-1, labels, is_earlier.double())
    ranks = torch.arange(nearest.shape[-1], device=targets.device).expand_as(labels)
    ranks = ranks.masked_fill(~is_earlier, n)
    nearest_rank = torch.full_like(votes, n).scatter_reduce(
        -1, labels, ranks.double(), reduce="amin"
    )
    preferred = _prefer(votes, -nearest_rank)
    return _log_probabilities(preferred.clamp_min(1).log(), votes > 0)


def prefix_nearest_class_mean(inputs: Tensor, targets: Tensor, n_classes: int) -> Tensor:
    """Scores ``-½‖x_i - μ_c‖²`` with μ_c the mean of the earlier exemplars of class c, for
    every prefix (the posterior of equal-prior unit-variance Gaussian classes, as
    log-probabilities); classes not seen yet are excluded; exact ties go to the lower class."""
    check_classification_episode(inputs, targets, n_classes)
    x = inputs.double()
    one_hot = F.one_hot(targets, n_classes).double()  # (B, n, C)
    sums = (one_hot[..., None] * x[:, :, None, :]).cumsum(dim=1)  # (B, n, C, d)
    sums = torch.cat([torch.zeros_like(sums[:, :1]), sums[:, :-1]], dim=1)
    counts = _seen_counts(targets, n_classes)
    means = sums / counts.clamp_min(1)[..., None]
    squared_distance = (x[:, :, None, :] - means).pow(2).sum(-1)  # (B, n, C)
    return _log_probabilities(-0.5 * squared_distance, counts > 0)


def prefix_logistic_regression(
    inputs: Tensor, targets: Tensor, n_classes: int, alpha: float
) -> Tensor:
    """Multinomial logistic regression with an L2 penalty, fitted on every prefix at once.

    For prefix ``i`` with seen classes S (those in ``targets[:, :i]``), minimises over weights
    w_c ∈ R^d and intercepts b_c of the classes in S::

        sum_{j<i} -log softmax_S(W x_j + b)[y_j] + (alpha / 2) sum_c ‖w_c‖²

    (sklearn's ``LogisticRegression(C=1/alpha)`` on three or more classes; on two classes
    sklearn fits one weight vector, which equals this fit with ``C = 2/alpha``), and scores x_i
    by the log-softmax over S. The intercepts are unpenalised, as in sklearn; their common
    shift, which changes no prediction, is pinned by adding ½ (sum_c b_c)².

    Every (prompt, prefix) pair is one problem of C(d + 1) unknowns, with unseen classes'
    unknowns held at 0; all of them take damped Newton steps together: a batched Hessian, a
    batched solve, and a backtracking line search, until the Newton decrement gᵀH⁻¹g is below
    1e-14 in every problem (or no step lowers any objective); typically 8-10 steps. Cost per
    step: B·n Hessians of size C(d+1), from a (B, n·C², n) × (B, n, (d+1)²) product (in
    float32) and their Cholesky factors; about 9 steps. Two classes are fitted as one binary
    problem of d + 1 unknowns with the same optimum (``_BinaryLogisticProblems``): 0.69 s per 256
    prompts of 41 points with d = 20 on one thread, against 3.6 s for the two-class multinomial
    form (benchmarks/RESULTS.md).
    """
    check_classification_episode(inputs, targets, n_classes)
    batch, n, d = inputs.shape
    features = torch.cat([inputs.double(), inputs.new_ones(batch, n, 1).double()], dim=-1)
    problem: _NewtonProblems
    if n_classes == 2:
        problem = _BinaryLogisticProblems(features, targets, alpha)
    else:
        problem = _LogisticProblems(features, targets, n_classes, alpha)
    params = features.new_zeros(batch, n, problem.n_vectors, d + 1)
    value = problem.objective(params)
    for _ in range(_MAX_NEWTON_STEPS):
        gradient, hessian = problem.gradient_and_hessian(params)
        chol, _ = torch.linalg.cholesky_ex(hessian)  # float32, positive definite by construction
        step = torch.cholesky_solve(gradient.flatten(2)[..., None].float(), chol)
        step = step.double().view_as(params)
        decrement = (gradient * step).sum((-2, -1))  # gᵀH⁻¹g, (B, n)
        unconverged = decrement >= _NEWTON_DECREMENT_TOL
        if not unconverged.any():
            break
        params, value, improved = problem.line_search(params, value, step, decrement, unconverged)
        if not improved:  # converged to rounding: no step size lowers any objective
            break
    return _log_probabilities(problem.class_scores(params), problem.seen)


class _NewtonProblems:
    """(B, n) penalised convex problems solved together by damped Newton: problem (b, i) uses
    the points ``j < i`` of prompt b; parameters (B, n, V, d + 1), V weight vectors of d weights
    then an intercept."""

    features: Tensor  # (B, n, F), F = d + 1
    seen: Tensor  # (B, n, C): the classes among each problem's points
    n_vectors: int  # V

    def objective(self, params: Tensor) -> Tensor:
        """(B, n) objective of every problem."""
        raise NotImplementedError

    def gradient_and_hessian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient (B, n, V, F) and Hessian (B, n, V·F, V·F), the Hessian in float32."""
        raise NotImplementedError

    def class_scores(self, params: Tensor) -> Tensor:
        """(B, n, C) logits of each problem's query, x_i (softmaxed over the seen classes)."""
        raise NotImplementedError

    def line_search(
        self, params: Tensor, value: Tensor, step: Tensor, decrement: Tensor, active: Tensor
    ) -> tuple[Tensor, Tensor, bool]:
        """Backtracking along ``-step`` for the ``active`` problems: the first t in
        ``_STEP_SIZES`` with sufficient decrease (Armijo, slope ``-decrement``). Returns the new
        parameters, their objective values, and whether any problem moved (one that finds no
        such t stays). Converged problems stay put: near rounding, their objective can "drop"
        by an ulp at any step, which would keep the loop going to its cap (measured: 100 steps
        instead of 8 on one thread, where a problem sat at a decrement of 4e-14)."""
        moved = ~active
        for size in _STEP_SIZES:
            candidate = params - size * step
            candidate_value = self.objective(candidate)
            accept = ~moved & (candidate_value <= value - _ARMIJO * size * decrement)
            params = torch.where(accept[..., None, None], candidate, params)
            value = torch.where(accept, candidate_value, value)
            moved |= accept
            if moved.all():
                break
        return params, value, bool((moved & active).any())


class _BinaryLogisticProblems(_NewtonProblems):
    """The two-class case of ``_LogisticProblems`` in half the unknowns. The multinomial
    optimum has w_1 = −w_0 = v/2 and b_1 = −b_0 = c/2 (the penalty and the intercepts' pin are
    smallest so), so it is binary logistic regression on z = v·x + c with the penalty
    (alpha / 4)‖v‖²: d + 1 unknowns instead of 2(d + 1), a Hessian a quarter the size, the same
    predictions. Problems that have not seen both classes fit nothing (v = c = 0): their
    prediction is fixed by the classes seen."""

    n_vectors = 1

    def __init__(self, features: Tensor, targets: Tensor, alpha: float) -> None:
        n, n_features = features.shape[1:]
        self.features = features  # (B, n, F)
        self.signs = 2.0 * targets.double() - 1.0  # (B, n): class 1 is +1
        self.seen = _seen_counts(targets, 2) > 0  # (B, n, 2)
        fitted = self.seen.all(-1)  # (B, n): both classes seen
        earlier = torch.ones(n, n, dtype=torch.bool, device=features.device).tril(-1)  # j < i
        self.uses = (earlier & fitted[..., None]).double()  # (B, i, j)
        penalty = torch.full((n_features,), alpha / 2, dtype=torch.float64, device=features.device)
        penalty[-1] = 0.0  # the intercept is not penalised
        self.penalty = penalty
        # Problems fitting nothing get an identity Hessian (their gradient is 0 at v = c = 0).
        self.regulariser = penalty + (~fitted[..., None]).double()  # (B, n, F)

    def _margins(self, params: Tensor) -> Tensor:
        """(B, i, j): s_j z_i(x_j), problem i's signed score of point j."""
        return torch.einsum("bif,bjf->bij", params[:, :, 0], self.features) * self.signs[:, None]

    def objective(self, params: Tensor) -> Tensor:
        losses = (F.softplus(-self._margins(params)) * self.uses).sum(-1)
        return losses + 0.5 * (params.pow(2) * self.penalty).sum((-2, -1))

    def gradient_and_hessian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        batch, n, _, n_features = params.shape
        wrong = torch.sigmoid(-self._margins(params))  # (B, i, j): 1 − P(the label of x_j)
        gradient = torch.einsum(
            "bij,bjf->bif", -wrong * self.signs[:, None] * self.uses, self.features
        )
        gradient = (gradient + params[:, :, 0] * self.penalty)[:, :, None]
        curvature = wrong * (1.0 - wrong) * self.uses  # (B, i, j): p (1 − p)
        outer = self.features[..., :, None] * self.features[..., None, :]  # (B, j, F, F)
        hessian = (curvature.float() @ outer.flatten(2).float()).view(
            batch, n, n_features, n_features
        )
        hessian.diagonal(dim1=-2, dim2=-1).add_(self.regulariser.float())
        return gradient, hessian

    def class_scores(self, params: Tensor) -> Tensor:
        half = 0.5 * (params[:, :, 0] * self.features).sum(-1)  # z / 2: (B, n)
        return torch.stack((-half, half), dim=-1)


class _LogisticProblems(_NewtonProblems):
    """The (B, n) penalised multinomial logistic problems of ``prefix_logistic_regression``.

    Parameters are (B, n, C, d + 1): per problem and class, d weights then the intercept.
    Problem (b, i) uses the points ``j < i`` of prompt b.
    """

    def __init__(self, features: Tensor, targets: Tensor, n_classes: int, alpha: float) -> None:
        n, n_features = features.shape[1:]
        self.features = features  # (B, n, F), F = d + 1
        self.one_hot = F.one_hot(targets, n_classes).double()  # (B, n, C)
        self.uses = torch.ones(n, n, dtype=torch.bool, device=features.device).tril(-1)  # j < i
        self.seen = _seen_counts(targets, n_classes) > 0  # (B, n, C)
        penalty = torch.full((n_features,), alpha, dtype=torch.float64, device=features.device)
        penalty[-1] = 0.0  # intercepts are not penalised
        self.penalty = penalty
        self.intercept = torch.zeros_like(penalty)
        self.intercept[-1] = 1.0
        self.n_classes = self.n_vectors = n_classes

    def _logits(self, params: Tensor) -> Tensor:
        """(B, n_problems, n_points, C), unseen classes at ``_UNSEEN`` (not -inf, so that a
        problem with no class seen yet gets a finite, unused softmax)."""
        logits = torch.einsum("bicf,bjf->bijc", params, self.features)
        return logits.masked_fill(~self.seen[:, :, None, :], _UNSEEN)

    def objective(self, params: Tensor) -> Tensor:
        """(B, n) penalised negative log-likelihood of every problem."""
        logits = self._logits(params)
        label_logit = (logits * self.one_hot[:, None]).sum(-1)
        losses = torch.logsumexp(logits, dim=-1) - label_logit  # (B, n_problems, n_points)
        losses = (losses * self.uses).sum(-1)
        penalty = 0.5 * (params.pow(2) * self.penalty).sum((-2, -1))
        shift = 0.5 * (params * self.intercept).sum((-2, -1)).pow(2)
        return losses + penalty + shift

    def gradient_and_hessian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient (B, n, C, F) and Hessian (B, n, C·F, C·F) of ``objective``."""
        batch, n, n_classes, n_features = params.shape
        probabilities = (
            torch.softmax(self._logits(params), -1) * self.uses[..., None]
        )  # (B, i, j, C)
        residuals = probabilities - self.one_hot[:, None] * self.uses[..., None]
        sums = (params * self.intercept).sum((-2, -1), keepdim=True)
        gradient = torch.einsum("bijc,bjf->bicf", residuals, self.features)
        gradient = gradient + params * self.penalty + sums * self.intercept
        gradient = gradient * self.seen[..., None]
        # Per point, the softmax curvature diag(p) - p pᵀ (C × C) times x xᵀ (F × F).
        curvature = (
            torch.diag_embed(probabilities)
            - probabilities[..., :, None] * probabilities[..., None, :]
        )  # (B, i, j, C, C)
        outer = self.features[..., :, None] * self.features[..., None, :]  # (B, j, F, F)
        # Sum over the points j as one (B, i·C², j) @ (B, j, F²) product per prompt, in float32:
        # the Hessian only shapes the steps (the gradient, float64, fixes the optimum), and this
        # product and the factorisation dominate the cost.
        curvature = curvature.flatten(3).transpose(2, 3).reshape(batch, -1, n)
        hessian = curvature.float() @ outer.flatten(2).float()
        hessian = hessian.view(batch, n, n_classes, n_classes, n_features, n_features)
        hessian = hessian.permute(0, 1, 2, 4, 3, 5).reshape(
            batch, n, n_classes * n_features, n_classes * n_features
        )
        seen = self.seen[..., None].expand(-1, -1, -1, n_features).flatten(2)  # (B, n, C·F)
        regulariser = self.penalty.repeat(n_classes) * seen + ~seen  # unseen: identity
        hessian.diagonal(dim1=-2, dim2=-1).add_(regulariser.float())
        # The shift term ½(Σ b_c)² couples the intercepts of the seen classes.
        intercepts = torch.arange(n_classes, device=params.device) * n_features + n_features - 1
        seen_classes = self.seen.float()
        coupling = seen_classes[..., :, None] * seen_classes[..., None, :]  # (B, n, C, C)
        hessian[..., intercepts[:, None], intercepts[None, :]] += coupling
        return gradient, hessian

    def class_scores(self, params: Tensor) -> Tensor:
        return torch.einsum("bncf,bnf->bnc", params, self.features)


class ClassificationAlgorithm(Algorithm):
    """A learner for classification episodes, scoring every class of the task it is built for."""

    applies_to = ("classification",)

    def __init__(self, task: Task, options: AlgorithmOptions | None = None) -> None:
        super().__init__(task, options)
        self.n_classes: int = task.n_classes


class LogisticRegressionOptions(AlgorithmOptions):
    alpha: float = Field(
        1.0,
        gt=0,
        description="L2 penalty on the weights (sklearn's C = 1 / alpha; intercepts are not "
        "penalised)",
    )


@register_algorithm("logistic_regression")
class LogisticRegression(ClassificationAlgorithm):
    """Multinomial logistic regression with an L2 penalty, fitted on every prefix."""

    Options = LogisticRegressionOptions
    options: LogisticRegressionOptions

    def predict(self, episode: Episode) -> Tensor:
        return prefix_logistic_regression(
            episode.inputs, episode.targets, self.n_classes, self.options.alpha
        )


@register_algorithm("nearest_class_mean")
class NearestClassMean(ClassificationAlgorithm):
    """The class whose mean of the exemplars seen so far is nearest (unseen classes excluded)."""

    def predict(self, episode: Episode) -> Tensor:
        return prefix_nearest_class_mean(episode.inputs, episode.targets, self.n_classes)


@register_algorithm("majority_label")
class MajorityLabel(ClassificationAlgorithm):
    """The most frequent label so far (ties: the label seen first); ignores the inputs."""

    def predict(self, episode: Episode) -> Tensor:
        check_classification_episode(episode.inputs, episode.targets, self.n_classes)
        return prefix_majority(episode.targets, self.n_classes)


@register_algorithm("copy_exemplar")
class CopyExemplar(ClassificationAlgorithm):
    """Copies the label of the context exemplar nearest to the query ("match and copy").

    What an induction head does in Reddy 2023 (arXiv 2312.03002); ties go to the earlier
    exemplar. It is ``knn(k=1)``, named for the bursty family it explains.
    """

    applies_to = ("bursty_classification",)

    def predict(self, episode: Episode) -> Tensor:
        return prefix_knn_vote(episode.inputs, episode.targets, 1, self.n_classes)
