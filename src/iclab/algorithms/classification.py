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

import functools
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
# Problems solved together hold about this many numbers in their largest intermediate.
_CHUNK_NUMBERS = 2**24


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
    unknowns held at 0, solved by damped Newton (``_newton``): batched Hessians, Cholesky
    solves and a backtracking line search, about 9 steps, each problem leaving the batch once
    its Newton decrement gᵀH⁻¹g is below 1e-14. Problems go prefix by prefix (all prompts' first
    prefix, then their second, ...) in runs of ``_CHUNK_NUMBERS`` / (n·C(d+1) + (C(d+1))²)
    problems: a run needs only the points before its longest prefix (half the work of
    padding every problem to n points) and bounds memory whatever the batch size. Two
    classes are fitted as one binary problem of d + 1 unknowns with the same optimum
    (``_BinaryLogisticProblems``). Measured in benchmarks/RESULTS.md ("Logistic regression").
    """
    check_classification_episode(inputs, targets, n_classes)
    batch, n, d = inputs.shape
    features = torch.cat([inputs.double(), inputs.new_ones(batch, n, 1).double()], dim=-1)
    seen = _seen_counts(targets, n_classes) > 0  # (B, n, C)
    kind = _BinaryLogisticProblems if n_classes == 2 else _LogisticProblems
    unknowns = kind.unknowns(n_classes, d + 1)
    run = max(1, _CHUNK_NUMBERS // (n * unknowns + unknowns**2))
    # Problem p = i·B + b is prefix i of prompt b.
    prompt = torch.arange(batch, device=inputs.device).repeat(n)
    length = torch.arange(n, device=inputs.device).repeat_interleave(batch)
    problem_seen = seen.transpose(0, 1).flatten(0, 1)  # (P, C)
    scores = []
    for start in range(0, batch * n, run):
        index = slice(start, start + run)
        points = max(1, int(length[index][-1]))  # the run's longest prefix
        prompts = _Prompts(features[:, :points], targets[:, :points])
        problems = kind(prompts, prompt[index], length[index], problem_seen[index], alpha)
        queries = features[prompt[index], length[index]]
        scores.append(problems.class_scores(_newton(problems), queries))
    scores = torch.cat(scores) if scores else features.new_zeros(0, n_classes)  # no prompt
    return _log_probabilities(scores.view(n, batch, n_classes).transpose(0, 1), seen)


def _newton(problems: _NewtonProblems) -> Tensor:
    """The minimisers (P, V, F) of the problems, by damped Newton steps. A problem leaves the
    batch once its Newton decrement is below the tolerance or no step size lowers its
    objective (converged to rounding): later steps factor only the few that remain, and a
    converged problem cannot keep the loop going by "improving" an ulp at some step size."""
    params = problems.prompts.features.new_zeros(
        len(problems), problems.n_vectors, problems.n_features
    )
    value = problems.objective(params)
    active = torch.arange(len(problems), device=params.device)
    for _ in range(_MAX_NEWTON_STEPS):
        gradient, hessian = problems.gradient_and_hessian(params[active])
        chol, _ = torch.linalg.cholesky_ex(hessian)  # float32, positive definite by construction
        step = torch.cholesky_solve(gradient.flatten(1)[..., None].float(), chol)
        step = step.double().view_as(gradient)
        decrement = (gradient * step).sum((-2, -1))  # gᵀH⁻¹g
        keep = (decrement >= _NEWTON_DECREMENT_TOL).nonzero().squeeze(1)
        if len(keep) == 0:
            break
        active, problems = active[keep], problems.subset(keep)
        moved_params, moved_value, moved = problems.line_search(
            params[active], value[active], step[keep], decrement[keep]
        )
        params[active], value[active] = moved_params, moved_value
        keep = moved.nonzero().squeeze(1)
        if len(keep) == 0:
            break
        active, problems = active[keep], problems.subset(keep)
    return params


class _Prompts:
    """The points of the prompts a run of problems draws on, shared by its subsets: features
    (B, m, F), F = d + 1 (the inputs, then 1 for the intercept), and targets (B, m)."""

    def __init__(self, features: Tensor, targets: Tensor) -> None:
        self.features = features  # float64
        self.targets = targets

    @functools.cached_property
    def features32(self) -> Tensor:
        """The features in float32, for the Hessians' products."""
        return self.features.float()

    @functools.cached_property
    def outer32(self) -> Tensor:
        """(B, m, F²) float32: x xᵀ of every point."""
        return (self.features32[..., :, None] * self.features32[..., None, :]).flatten(2)


class _NewtonProblems:
    """Penalised convex problems solved together by ``_newton``: problem p fits the points
    j < ``length[p]`` of prompt ``prompt[p]``; its parameters are (V, F), V weight vectors."""

    n_vectors: int  # V

    def __init__(
        self, prompts: _Prompts, prompt: Tensor, length: Tensor, seen: Tensor, alpha: float
    ) -> None:
        self.prompts = prompts
        self.prompt = prompt  # (P,)
        self.length = length  # (P,)
        self.seen = seen  # (P, C): the classes among each problem's points
        self.alpha = alpha
        self.n_features = prompts.features.shape[-1]
        self.points = max(1, int(length.max()))  # the points the longest problem uses
        self.uses = torch.arange(self.points, device=length.device) < length[:, None]  # (P, m)

    @staticmethod
    def unknowns(n_classes: int, n_features: int) -> int:
        """V·F, the unknowns of one problem."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.prompt)

    def subset(self, keep: Tensor) -> _NewtonProblems:
        """The problems at ``keep``."""
        return type(self)(
            self.prompts, self.prompt[keep], self.length[keep], self.seen[keep], self.alpha
        )

    def objective(self, params: Tensor) -> Tensor:
        """(P,) objective of every problem."""
        raise NotImplementedError

    def gradient_and_hessian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient (P, V, F) and Hessian (P, V·F, V·F), the Hessian in float32: it only shapes
        the steps (the gradient, float64, fixes the optimum), and its products and
        factorisation are the cost."""
        raise NotImplementedError

    def class_scores(self, params: Tensor, queries: Tensor) -> Tensor:
        """(P, C) logits of each problem's query (P, F), softmaxed over the seen classes."""
        raise NotImplementedError

    def line_search(
        self, params: Tensor, value: Tensor, step: Tensor, decrement: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Backtracking along ``-step``: the first t in ``_STEP_SIZES`` with sufficient decrease
        (Armijo, slope ``-decrement``). Returns the new parameters, their objective values,
        and which problems moved (one that finds no such t stays)."""
        moved = torch.zeros_like(value, dtype=torch.bool)
        for size in _STEP_SIZES:
            candidate = params - size * step
            candidate_value = self.objective(candidate)
            accept = ~moved & (candidate_value <= value - _ARMIJO * size * decrement)
            params = torch.where(accept[:, None, None], candidate, params)
            value = torch.where(accept, candidate_value, value)
            moved |= accept
            if moved.all():
                break
        return params, value, moved


class _BinaryLogisticProblems(_NewtonProblems):
    """The two-class case of ``_LogisticProblems`` in half the unknowns. The multinomial
    optimum has w_1 = −w_0 = v/2 and b_1 = −b_0 = c/2 (the penalty and the intercepts' pin are
    smallest so), so it is binary logistic regression on z = v·x + c with the penalty
    (alpha / 4)‖v‖²: d + 1 unknowns instead of 2(d + 1), a Hessian a quarter the size, the same
    predictions. Problems that have not seen both classes fit nothing (v = c = 0): their
    prediction is fixed by the classes seen.

    With so few unknowns, copying each prompt's points once per problem would cost more than
    the algebra: margins, gradients and Hessians are products per prompt on a (prompt,
    prefix) grid, from which each problem's row is gathered."""

    n_vectors = 1

    def __init__(
        self, prompts: _Prompts, prompt: Tensor, length: Tensor, seen: Tensor, alpha: float
    ) -> None:
        super().__init__(prompts, prompt, length, seen, alpha)
        first = int(length.min())
        self.grid = (len(prompts.features), int(length.max()) - first + 1)  # (B, S)
        self.cell = prompt * self.grid[1] + length - first  # (P,): the problem's grid row
        fitted = seen.all(-1)  # (P,): both classes seen
        self.weights = (self.uses & fitted[:, None]).double()  # (P, m)
        targets = prompts.targets[:, : self.points].index_select(0, prompt)
        self.signs = 2.0 * targets.double() - 1.0  # (P, m): class 1 is +1
        penalty = prompts.features.new_full((self.n_features,), alpha / 2)
        penalty[-1] = 0.0  # the intercept is not penalised
        self.penalty = penalty
        # Problems fitting nothing get an identity Hessian (their gradient is 0 at v = c = 0).
        self.regulariser = penalty + (~fitted[:, None]).double()  # (P, F)

    @staticmethod
    def unknowns(n_classes: int, n_features: int) -> int:
        return n_features

    def _on_grid(self, rows: Tensor) -> Tensor:
        """(B, S, k): each problem's row of ``rows`` (P, k) in its grid cell, zeros elsewhere."""
        grid = rows.new_zeros(self.grid[0] * self.grid[1], rows.shape[-1])
        return grid.index_copy_(0, self.cell, rows).view(*self.grid, -1)

    def _of_problems(self, grid: Tensor) -> Tensor:
        """(P, k): each problem's row of a (B, S, k) grid."""
        return grid.flatten(0, 1).index_select(0, self.cell)

    def _margins(self, params: Tensor) -> Tensor:
        """(P, m): s_j z(x_j), each problem's signed score of its points."""
        features = self.prompts.features[:, : self.points]
        scores = self._on_grid(params[:, 0]) @ features.transpose(1, 2)  # (B, S, m)
        return self._of_problems(scores) * self.signs

    def objective(self, params: Tensor) -> Tensor:
        losses = (F.softplus(-self._margins(params)) * self.weights).sum(-1)
        return losses + 0.5 * (params.pow(2) * self.penalty).sum((-2, -1))

    def gradient_and_hessian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        wrong = torch.sigmoid(-self._margins(params))  # (P, m): 1 − P(the label of x_j)
        residuals = self._on_grid(-wrong * self.signs * self.weights)
        gradient = self._of_problems(residuals @ self.prompts.features[:, : self.points])
        gradient = gradient[:, None] + params * self.penalty
        curvature = self._on_grid((wrong * (1.0 - wrong) * self.weights).float())  # p (1 − p)
        hessian = self._of_problems(curvature @ self.prompts.outer32[:, : self.points])
        hessian = hessian.view(-1, self.n_features, self.n_features)
        hessian.diagonal(dim1=-2, dim2=-1).add_(self.regulariser.float())
        return gradient, hessian

    def class_scores(self, params: Tensor, queries: Tensor) -> Tensor:
        half = 0.5 * (params[:, 0] * queries).sum(-1)  # z / 2: (P,)
        return torch.stack((-half, half), dim=-1)


class _LogisticProblems(_NewtonProblems):
    """The penalised multinomial logistic problems of ``prefix_logistic_regression``:
    parameters (P, C, F), per class d weights then the intercept; unseen classes' stay 0."""

    def __init__(
        self, prompts: _Prompts, prompt: Tensor, length: Tensor, seen: Tensor, alpha: float
    ) -> None:
        super().__init__(prompts, prompt, length, seen, alpha)
        self.n_classes = self.n_vectors = seen.shape[-1]
        # Each problem's own copy of its points: the Hessian's products are per problem.
        self.features = prompts.features[:, : self.points].index_select(0, prompt)  # (P, m, F)
        self.features32 = prompts.features32[:, : self.points].index_select(0, prompt)
        targets = prompts.targets[:, : self.points].index_select(0, prompt)
        self.weights = self.uses.double()[..., None]  # (P, m, 1)
        self.labels = F.one_hot(targets, self.n_classes).double() * self.weights  # (P, m, C)
        penalty = prompts.features.new_full((self.n_features,), alpha)
        penalty[-1] = 0.0  # intercepts are not penalised
        self.penalty = penalty

    @staticmethod
    def unknowns(n_classes: int, n_features: int) -> int:
        return n_classes * n_features

    def _logits(self, params: Tensor) -> Tensor:
        """(P, m, C), unseen classes at ``_UNSEEN`` (not -inf, so that a problem with no class
        seen yet gets a finite, unused softmax)."""
        logits = self.features @ params.transpose(1, 2)
        return logits.masked_fill(~self.seen[:, None, :], _UNSEEN)

    def objective(self, params: Tensor) -> Tensor:
        logits = self._logits(params)
        losses = torch.logsumexp(logits, dim=-1) * self.weights[..., 0]
        losses = losses.sum(-1) - (logits * self.labels).sum((-2, -1))
        penalty = 0.5 * (params.pow(2) * self.penalty).sum((-2, -1))
        shift = 0.5 * params[..., -1].sum(-1).pow(2)
        return losses + penalty + shift

    def gradient_and_hessian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        n_problems, n_classes, n_features = params.shape
        probabilities = torch.softmax(self._logits(params), -1) * self.weights  # (P, m, C)
        gradient = (probabilities - self.labels).transpose(1, 2) @ self.features  # (P, C, F)
        gradient = gradient + params * self.penalty
        gradient[..., -1] += params[..., -1].sum(-1, keepdim=True)  # the pin ½(Σ b_c)²
        gradient = gradient * self.seen[..., None]
        # Per point, the softmax curvature diag(p) − p pᵀ times x xᵀ: with z_j = p_j ⊗ x_j,
        # H = blockdiag_c(Σ_j p_jc x_j x_jᵀ) − Σ_j z_j z_jᵀ, two batched products.
        features = self.features32
        z = (probabilities.float()[..., None] * features[:, :, None, :]).flatten(2)  # (P, m, CF)
        hessian = (z.transpose(1, 2) @ z).neg_()
        blocks = (z.transpose(1, 2) @ features).view(n_problems, n_classes, n_features, -1)
        hessian.view(n_problems, n_classes, n_features, n_classes, n_features).diagonal(
            dim1=1, dim2=3
        ).add_(blocks.permute(0, 2, 3, 1))
        seen = self.seen[..., None].expand(-1, -1, n_features).flatten(1)  # (P, C·F)
        regulariser = self.penalty.repeat(n_classes) * seen + ~seen  # unseen: identity
        hessian.diagonal(dim1=-2, dim2=-1).add_(regulariser.float())
        # The pin ½(Σ b_c)² couples the intercepts of the seen classes.
        intercepts = torch.arange(n_classes, device=params.device) * n_features + n_features - 1
        seen_classes = self.seen.float()
        coupling = seen_classes[:, :, None] * seen_classes[:, None, :]  # (P, C, C)
        hessian[:, intercepts[:, None], intercepts[None, :]] += coupling
        return gradient, hessian

    def class_scores(self, params: Tensor, queries: Tensor) -> Tensor:
        return (params @ queries[..., None]).squeeze(-1)


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
