"""Reference learners for regression episodes, each batched over every prefix at once.

Every function here maps ``inputs`` (B, n, d) and ``targets`` (B, n) to predictions (B, n) where
prediction ``i`` uses only ``inputs[:, : i + 1]`` and ``targets[:, :i]`` (``i`` in-context examples;
with none the prediction is 0). No Python loop runs over prefixes or prompts: cumulative sums,
masked distance matrices and a few Cholesky factors per prompt give all prefixes together (a loop
of pseudo-inverses, as in Garg et al.'s code, was 50-75× slower here; benchmarks/baselines.py).
Numerics run in float64; results come back in the dtype and on the device of ``targets``.

The classes at the bottom wrap these functions as registered ``Algorithm`` s.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from iclab.algorithms.base import Algorithm, AlgorithmOptions, register_algorithm
from iclab.algorithms.classification import prefix_knn_vote
from iclab.algorithms.neighbours import earlier_neighbours
from iclab.episode import Episode
from iclab.tasks.base import Task
from iclab.tasks.regression import LinearRegression

# A Cholesky pivot L_jj² smaller than this fraction of its diagonal entry means row j is, up to
# rounding, a combination of the rows before it: the factor is then not trusted (see
# `_cholesky_is_trustworthy`). √eps sits far above rounding (~ n·eps) and far below the pivots of
# well-posed prompts; a false alarm only costs a trip through the exact fallback.
_PIVOT_RTOL = math.sqrt(torch.finfo(torch.float64).eps)


def _check_shapes(inputs: Tensor, targets: Tensor) -> None:
    if inputs.ndim != 3 or targets.shape != inputs.shape[:2]:
        raise ValueError(
            "regression learners need inputs (B, n, d) and targets (B, n); "
            f"got inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}"
        )


def _exclusive_cumsum(values: Tensor) -> Tensor:
    """``out[:, i] = sum_{j<i} values[:, j]`` along dim 1 (so ``out[:, 0] = 0``)."""
    total = values.cumsum(dim=1)
    return torch.cat([torch.zeros_like(total[:, :1]), total[:, :-1]], dim=1)


def prefix_averaging(inputs: Tensor, targets: Tensor) -> Tensor:
    """Garg et al. 2022's "averaging" estimator for every prefix.

    ``w_i = (1/i) sum_{j<i} y_j x_j`` and ``pred_i = w_i · x_i`` (0 at ``i = 0``).
    """
    _check_shapes(inputs, targets)
    x, y = inputs.double(), targets.double()
    moment = _exclusive_cumsum(y[..., None] * x)  # (B, n, d): sum_{j<i} y_j x_j
    n_seen = torch.arange(x.shape[1], device=x.device).clamp(min=1)  # (n,)
    w = moment / n_seen[:, None]
    return (w * x).sum(-1).to(targets.dtype)


def prefix_knn(inputs: Tensor, targets: Tensor, k: int) -> Tensor:
    """Uniform average of the targets of the ``k`` nearest earlier inputs (Euclidean), per prefix.

    With fewer than ``k`` earlier inputs all of them are averaged; 0 at ``i = 0``. Ties go to the
    earlier point (stable sort), so the result does not depend on the sorting kernel.
    """
    _check_shapes(inputs, targets)
    y = targets.double()
    batch, n = y.shape
    nearest, is_earlier = earlier_neighbours(inputs, k)  # (B, n, k')
    neighbour_targets = y[:, None, :].expand(batch, n, n).gather(-1, nearest)
    n_neighbours = is_earlier.sum(-1).clamp(min=1)
    preds = (neighbour_targets * is_earlier).sum(-1) / n_neighbours
    return preds.to(targets.dtype)


def _cholesky_is_trustworthy(matrix: Tensor, chol: Tensor, info: Tensor) -> Tensor:
    """Per matrix of a batch, whether ``cholesky_ex`` succeeded with no pivot lost to rounding.

    ``L_jj²`` is the part of ``A_jj`` not explained by the rows before j (for a kernel matrix, the
    squared distance of ``x_j`` from the span of the earlier inputs). A rank-deficient matrix can
    still pass ``cholesky_ex`` with a pivot of rounding size and a meaningless factor, hence the
    relative test on top of ``info``.
    """
    pivots = chol.diagonal(dim1=-2, dim2=-1) ** 2
    diagonal = matrix.diagonal(dim1=-2, dim2=-1)
    return (info == 0) & (pivots > _PIVOT_RTOL * diagonal).all(-1)


def _kernel_form(x: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Ridge (``alpha > 0``) or min-norm least squares (``alpha = 0``) for the prefixes
    ``i = 0..m`` of ``x`` (B, m+1, d) and ``y`` (B, m), with ``m <= d``.

    Kernel (dual) form: ``pred_i = k_i^T (K_i + α I)^{-1} y_{<i}`` with ``K = X X^T`` and
    ``k_i = K[i, :i]``; for ``α = 0`` this is the zero-noise Gaussian-process posterior mean and
    needs the first ``m`` inputs linearly independent. With ``K[:m, :m] + α I = L L^T`` the leading
    block ``L[:i, :i]`` is the Cholesky factor of ``K_i + α I`` and ``L[i, :i] = L_{<i}^{-1} k_i``
    (the diagonal shift does not reach off-diagonal entries), so with ``u = L^{-1} y``::

        pred_i = (L_{<i}^{-1} k_i) · (L_{<i}^{-1} y_{<i}) = L[i, :i] · u[:i]     (i < m)
        pred_m = (L^{-1} K[:m, m]) · u

    Returns the predictions (B, m+1) and, per prompt, whether the factorisation was trustworthy.
    """
    m = y.shape[1]
    kernel = x @ x.mT  # (B, m+1, m+1)
    shifted = kernel[:, :m, :m] + alpha * torch.eye(m, dtype=x.dtype, device=x.device)
    chol, info = torch.linalg.cholesky_ex(shifted)
    u = torch.linalg.solve_triangular(chol, y[..., None], upper=False)  # (B, m, 1)
    preds_before_m = (chol.tril(-1) @ u).squeeze(-1)  # (B, m)
    projection = torch.linalg.solve_triangular(chol, kernel[:, :m, m:], upper=False)  # (B, m, 1)
    pred_m = (projection * u).sum(dim=(1, 2))  # (B,)
    preds = torch.cat([preds_before_m, pred_m[:, None]], dim=1)
    trustworthy = _cholesky_is_trustworthy(shifted, chol, info)
    return preds, trustworthy & preds.isfinite().all(-1)


def _update_form(x: Tensor, y: Tensor, alpha: float, start: int) -> tuple[Tensor, Tensor]:
    """Ridge or least squares for the overdetermined prefixes ``i = start..n-1`` (``start > d``).

    The solution on the first ``start`` points, ``w_A = A^{-1} b_A`` with
    ``A = X_A^T X_A + α I``, is updated by each later point as a Bayesian posterior: the solution on
    the points before ``i`` is the posterior mean under the prior ``w ~ N(w_A, A^{-1})`` with unit
    noise (its precision ``A + sum x_j x_j^T`` and mean agree). That is a Gaussian process with
    mean ``x · w_A`` and kernel ``x^T A^{-1} x'``, whose kernel form (as in ``_kernel_form``, with
    noise 1) needs one Cholesky factor ``L_M`` of ``M = X_rest A^{-1} X_rest^T + I`` for all
    prefixes::

        pred_i = x_i · w_A - L_M[i, :i] · (L_M^{-1} r)[:i],     r_j = x_j · w_A - y_j

    with rows of ``M`` and ``r`` indexing the points ``start..n-1``. ``M >= I`` is well
    conditioned; only ``A`` can be singular. Returns the predictions (B, n-start) and, per prompt,
    whether the factorisation of ``A`` was trustworthy.
    """
    d, n_rest = x.shape[2], x.shape[1] - start
    x_first, x_rest = x[:, :start], x[:, start:]  # (B, start, d), (B, P, d)
    gram = x_first.mT @ x_first + alpha * torch.eye(d, dtype=x.dtype, device=x.device)  # A
    chol_gram, info = torch.linalg.cholesky_ex(gram)
    w_first = torch.cholesky_solve(x_first.mT @ y[:, :start, None], chol_gram)  # (B, d, 1)
    kernel = x_rest @ torch.cholesky_solve(x_rest.mT, chol_gram)  # X_rest A^{-1} X_rest^T
    kernel = kernel + torch.eye(n_rest, dtype=x.dtype, device=x.device)  # M: (B, P, P)
    chol_kernel, _ = torch.linalg.cholesky_ex(kernel)  # M >= I: fails only if A was not trusted
    prior_preds = (x_rest @ w_first).squeeze(-1)  # (B, P)
    residuals = prior_preds - y[:, start:]
    u = torch.linalg.solve_triangular(chol_kernel, residuals[..., None], upper=False)
    preds = prior_preds - (chol_kernel.tril(-1) @ u).squeeze(-1)
    trustworthy = _cholesky_is_trustworthy(gram, chol_gram, info)
    return preds, trustworthy & preds.isfinite().all(-1)


def _eigen_form(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    """Ridge or min-norm least squares for every prefix of any prompt, rank-deficient ones too.

    ``w_i = (G_i + α I)^+ b_i`` with the exclusive cumulative sums ``G_i = sum_{j<i} x_j x_j^T``
    and ``b_i = sum_{j<i} y_j x_j``; for ``α = 0`` this is ``pinv(X_{<i}) y_{<i}`` because
    ``X^+ = (X^T X)^+ X^T``. ``eigh`` of ``G_i`` with pinv's relative cut-off: eigenvalues at most
    ``max(d, i) · eps · λ_max`` count as zero, and ``b_i`` (which lies in the range of ``G_i``)
    gets no component along them. Much slower than the Cholesky forms (one d×d eigendecomposition
    per prefix), so it only runs on the prompts where those fail.
    """
    n, d = x.shape[1], x.shape[2]
    gram = _exclusive_cumsum(x[..., :, None] * x[..., None, :])  # (B, n, d, d)
    moment = _exclusive_cumsum(y[..., None] * x)  # (B, n, d)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    n_rows = torch.arange(n, device=x.device).clamp(min=d)  # max(d, i)
    cutoff = n_rows[:, None] * torch.finfo(x.dtype).eps * eigenvalues[..., -1:]
    kept = eigenvalues > cutoff
    inverse = torch.where(kept, (eigenvalues + alpha).reciprocal(), torch.zeros_like(eigenvalues))
    coefficients = inverse * (eigenvectors.mT @ moment[..., None]).squeeze(-1)
    w = (eigenvectors @ coefficients[..., None]).squeeze(-1)  # (B, n, d)
    return (w * x).sum(-1)


def _prefix_regression(inputs: Tensor, targets: Tensor, alpha: float) -> Tensor:
    """Ridge (``alpha > 0``) or min-norm least squares (``alpha = 0``) for every prefix, exactly.

    Three forms, each a couple of batched factorisations per prompt, chosen for conditioning:

    * ``i <= m = min(d, n-1)`` (underdetermined): ``_kernel_form``, one Cholesky factor of
      ``X X^T + α I`` serving every such prefix;
    * ``i > d`` (overdetermined): ``_update_form``, the solution on the first ``d + 1`` points
      updated by the later ones, again one Cholesky factor for all prefixes. (The kernel form
      over all points would not do: ``K_i + α I`` has ``i - d`` eigenvalues equal to ``α``.)
    * prompts where a Cholesky fails or is untrustworthy (rank deficiency: zeroed input
      dimensions, repeated points) are recomputed with ``_eigen_form``.

    Input coordinates that are zero in every prompt (the curriculum's inactive dimensions) are
    dropped first: they change no prediction, and without them the prompts are full rank.
    """
    _check_shapes(inputs, targets)
    x, y = inputs.double(), targets.double()
    active = x.ne(0).any(dim=1).any(dim=0)  # (d,)
    if not active.all():
        x = x[..., active]
    batch, n, d = x.shape
    preds = x.new_zeros(batch, n)
    trustworthy = torch.ones(batch, dtype=torch.bool, device=x.device)
    m = min(d, n - 1)
    if m > 0:
        preds[:, : m + 1], kernel_ok = _kernel_form(x[:, : m + 1], y[:, :m], alpha)
        trustworthy &= kernel_ok
    if d + 1 < n:
        preds[:, d + 1 :], update_ok = _update_form(x, y, alpha, start=d + 1)
        trustworthy &= update_ok
    if not trustworthy.all():
        untrusted = ~trustworthy
        preds[untrusted] = _eigen_form(x[untrusted], y[untrusted], alpha)
    return preds.to(targets.dtype)


def prefix_least_squares(inputs: Tensor, targets: Tensor) -> Tensor:
    """Min-norm least squares for every prefix: ``pred_i = x_i · pinv(X_{<i}) y_{<i}``, exactly
    (not ridge with a tiny penalty, which is off by O(1) near ``i = d`` on noisy data)."""
    return _prefix_regression(inputs, targets, alpha=0.0)


def prefix_ridge(inputs: Tensor, targets: Tensor, alpha: float) -> Tensor:
    """Ridge regression for every prefix: ``w_i = (X^T X + α I)^{-1} X^T y`` over the first i
    points, ``pred_i = w_i · x_i``; ``alpha`` must be > 0."""
    if not alpha > 0:
        raise ValueError(
            f"ridge needs alpha > 0, got {alpha!r} (alpha = 0 is prefix_least_squares)"
        )
    return _prefix_regression(inputs, targets, alpha)


@register_algorithm("zero")
class Zero(Algorithm):
    """Predicts 0 everywhere: the error of a learner that ignores the context."""

    def predict(self, episode: Episode) -> Tensor:
        _check_shapes(episode.inputs, episode.targets)
        return torch.zeros_like(episode.targets)


@register_algorithm("averaging")
class Averaging(Algorithm):
    """Averaging estimator w = mean(y_j x_j) (Garg et al. 2022)."""

    def predict(self, episode: Episode) -> Tensor:
        return prefix_averaging(episode.inputs, episode.targets)


class NearestNeighboursOptions(AlgorithmOptions):
    k: int = Field(
        3, ge=1, description="neighbours; fewer are used while fewer earlier points exist"
    )


@register_algorithm("knn")
class NearestNeighbours(Algorithm):
    """k nearest earlier inputs (Euclidean): mean target (regression) or majority vote (classes).

    On classification episodes the scores are log vote shares, ties going to the class of the
    nearest neighbour among the tied ones (``iclab.algorithms.classification.prefix_knn_vote``),
    one per class of the task it was built for.
    """

    Options = NearestNeighboursOptions
    options: NearestNeighboursOptions
    applies_to = ("regression", "classification")

    def __init__(self, task: Task, options: NearestNeighboursOptions | None = None) -> None:
        super().__init__(task, options)
        self.n_classes = task.n_classes

    def predict(self, episode: Episode) -> Tensor:
        if episode.kind != "classification":
            return prefix_knn(episode.inputs, episode.targets, self.options.k)
        if self.n_classes is None:
            raise ValueError(
                "knn was built for a regression task, so it has no number of classes to score "
                "a classification episode with; build it for the episode's task"
            )
        return prefix_knn_vote(episode.inputs, episode.targets, self.options.k, self.n_classes)


@register_algorithm("least_squares")
class LeastSquares(Algorithm):
    """Min-norm ordinary least squares, pinv(X) y, exact for every prefix."""

    def predict(self, episode: Episode) -> Tensor:
        return prefix_least_squares(episode.inputs, episode.targets)


class RidgeOptions(AlgorithmOptions):
    alpha: float = Field(
        0.1,
        gt=0,
        description="L2 penalty (alpha -> 0 is least_squares)",
    )


@register_algorithm("ridge")
class Ridge(Algorithm):
    """Ridge regression (X^T X + alpha I)^{-1} X^T y."""

    Options = RidgeOptions
    options: RidgeOptions

    def predict(self, episode: Episode) -> Tensor:
        return prefix_ridge(episode.inputs, episode.targets, self.options.alpha)


@register_algorithm("bayes_optimal")
class BayesOptimalLinearRegression(Algorithm):
    """Posterior mean for linear regression with w ~ N(0, τ² I) and noise N(0, σ²).

    That is ridge with ``alpha = σ²/τ²`` when ``σ > 0``, and its limit, min-norm least squares,
    when ``σ = 0``. σ and τ are the task's ``noise_std`` and ``weight_std``, so it takes no
    options (``ridge`` takes another penalty).
    """

    applies_to = ("linear_regression", "noisy_linear_regression")

    def __init__(self, task: LinearRegression, options: AlgorithmOptions | None = None) -> None:
        super().__init__(task, options)
        self.alpha = (task.options.noise_std / task.options.weight_std) ** 2

    def predict(self, episode: Episode) -> Tensor:
        if self.alpha == 0:
            return prefix_least_squares(episode.inputs, episode.targets)
        return prefix_ridge(episode.inputs, episode.targets, self.alpha)
