"""Learners for the linear families: gradient descent, sparse recovery, and Bayes posteriors.

Like ``iclab.algorithms.regression``, every function here maps ``inputs`` (B, n, d) and ``targets``
(B, n) to predictions (B, n) for every prefix at once, prediction ``i`` using ``inputs[:, :i+1]``
and ``targets[:, :i]`` only. Most of them work on the exclusive cumulative moments
``G_i = Σ_{j<i} x_j x_jᵀ`` and ``b_i = Σ_{j<i} y_j x_j`` (``prefix_moments``), so a fit on every
prefix is one batched problem of shape (B, n, d, d). Numerics in float64; results come back in the
dtype of ``targets``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from iclab.algorithms.base import Algorithm, AlgorithmOptions, register_algorithm
from iclab.algorithms.regression import (
    _check_shapes,
    _exclusive_cumsum,
    prefix_least_squares,
    prefix_ridge,
)
from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.seeding import generator_for
from iclab.tasks.base import Task
from iclab.tasks.regression import (
    FinitePoolRegression,
    LinearRegression,
    Mixture,
    RepresentationRegression,
)

# A noise std below this is treated as this in likelihoods: the noiseless limit of a posterior
# over tasks, kept finite. Far above float32 rounding of targets (~1e-6) and far below any noise
# a family is configured with.
_NOISE_FLOOR = 1e-4
# (B, n, M) float64 elements held at once by the pool posterior: a chunk of prompts at a time.
_POOL_CHUNK_ELEMENTS = 1 << 22


def prefix_moments(inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``G`` (B, n, d, d), ``b`` (B, n, d) as above, and ``max(i, 1)`` (n,), in float64."""
    _check_shapes(inputs, targets)
    x, y = inputs.double(), targets.double()
    gram = _exclusive_cumsum(x[..., :, None] * x[..., None, :])
    moment = _exclusive_cumsum(y[..., None] * x)
    n_seen = torch.arange(x.shape[1], device=x.device, dtype=x.dtype).clamp(min=1)
    return gram, moment, n_seen


def _predict_with(weights: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """``pred_i = w_i · x_i`` for per-prefix weights (B, n, d)."""
    return (weights * inputs.double()).sum(-1).to(targets.dtype)


# ----------------------------------------------------------------------------------------------
# Gradient descent


def gradient_descent_weights(
    gram: Tensor,
    moment: Tensor,
    n_seen: Tensor,
    steps: int,
    lr: float | Tensor,
    preconditioner: Tensor | None = None,
) -> Tensor:
    """``steps`` steps of (preconditioned) GD from ``w = 0`` on ``L_i(w) = ‖X_{<i} w − y_{<i}‖² /
    (2i)`` for every prefix: ``w ← w − lr_i · P (G_i w − b_i) / i``. ``lr`` is one step size or
    one per prefix length, (n,). Returns (B, n, d).

    With one step and ``lr = 1`` this is Garg et al.'s averaging estimator ``b_i / i``.
    """
    lr = torch.as_tensor(lr, dtype=moment.dtype, device=moment.device)
    lr = lr[:, None] if lr.ndim else lr  # (n, 1) broadcasts over (B, n, d)
    weights = torch.zeros_like(moment)
    for _ in range(steps):
        gradient = ((gram @ weights[..., None]).squeeze(-1) - moment) / n_seen[:, None]
        if preconditioner is not None:
            gradient = gradient @ preconditioner.to(gradient).T
        weights = weights - lr * gradient
    return weights


def prefix_gradient_descent(
    inputs: Tensor,
    targets: Tensor,
    steps: int,
    lr: float | Tensor,
    preconditioner: Tensor | None = None,
) -> Tensor:
    """Predictions of ``gradient_descent_weights`` for every prefix (0 with no examples)."""
    gram, moment, n_seen = prefix_moments(inputs, targets)
    weights = gradient_descent_weights(gram, moment, n_seen, steps, lr, preconditioner)
    return _predict_with(weights, inputs, targets)


# Learning rates tried by the tuner: 2^(k/2), k = -16..4, i.e. 1/256 .. 4 (lr = 1 with one step
# is averaging; stable rates are below 2 / λ_max(G_i / i)).
_LR_GRID = tuple(2.0 ** (k / 2) for k in range(-16, 5))
_TUNING_PROMPTS = 512


def tune_learning_rates(
    task: Task, stream: str, steps: int, preconditioner: Tensor | None = None
) -> Tensor:
    """For every prefix length i, the grid step size with the least mean squared error on
    held-out prompts of ``task`` (their own seed stream, ``generator_for(0, "tune", stream)``),
    as a (n,) tensor over ``max(default_n_points, 2d + 1)`` positions.

    One rate per context size is the best k-step GD for each prefix length, which a trained
    model, knowing its position, can also be; a single rate for all lengths is too small for
    long contexts or diverges on short ones. Diverging rates lose.
    """
    n_points = max(type(task).default_n_points, 2 * task.n_dims + 1)
    episode = task.sample(_TUNING_PROMPTS, n_points, generator_for(0, "tune", stream))
    gram, moment, n_seen = prefix_moments(episode.inputs, episode.targets)
    x, y = episode.inputs.double(), episode.targets.double()
    errors = []
    for lr in _LR_GRID:
        weights = gradient_descent_weights(gram, moment, n_seen, steps, lr, preconditioner)
        error = ((weights * x).sum(-1) - y).pow(2).mean(0)  # (n,)
        errors.append(error.nan_to_num(math.inf, math.inf, math.inf))
    best = torch.stack(errors).argmin(0)  # per prefix length, over the grid
    return torch.tensor(_LR_GRID, dtype=torch.float64)[best]


class GradientDescentOptions(AlgorithmOptions):
    steps: int = Field(1, ge=1, description="GD steps from w = 0")
    lr: float | None = Field(
        None,
        gt=0,
        description="step size; null: one per prefix length, tuned on held-out prompts of the task",
    )


@register_algorithm("gd")
class GradientDescent(Algorithm):
    """k steps of gradient descent on the in-context squared loss from w = 0 (von Oswald et al.).

    The loss of prefix i is ‖X_{<i} w − y_{<i}‖² / (2i) (von Oswald et al. 2023, arXiv
    2212.07677; Akyürek et al. 2022, arXiv 2211.15661): one step from 0 is what their one-layer
    linear attention implements. With ``lr`` null, one step size per prefix length is picked
    from a grid when the algorithm is built, by the error on held-out prompts of the task
    (``tune_learning_rates``); prompts longer than the tuned ones reuse the last rate.
    """

    Options = GradientDescentOptions
    options: GradientDescentOptions

    def __init__(self, task: Task, options: GradientDescentOptions | None = None) -> None:
        super().__init__(task, options)
        self.preconditioner = self.preconditioner_for(task)
        self.lr: float | Tensor  # one step size, or one per prefix length
        if self.options.lr is not None:
            self.lr = self.options.lr
        else:
            steps = self.options.steps
            self.lr = tune_learning_rates(task, type(self).name, steps, self.preconditioner)

    def preconditioner_for(self, task: Task) -> Tensor | None:
        """The matrix applied to every gradient (None, the identity, for plain GD)."""
        return None

    def step_sizes(self, n_points: int) -> float | Tensor:
        """The step size of every prefix length of an ``n_points`` prompt."""
        if not isinstance(self.lr, Tensor):
            return self.lr
        padding = self.lr[-1:].expand(max(0, n_points - len(self.lr)))
        return torch.cat([self.lr, padding])[:n_points]

    def predict(self, episode: Episode) -> Tensor:
        return prefix_gradient_descent(
            episode.inputs,
            episode.targets,
            self.options.steps,
            self.step_sizes(episode.n_points),
            self.preconditioner,
        )


@register_algorithm("preconditioned_gd")
class PreconditionedGradientDescent(GradientDescent):
    """Gradient descent preconditioned by the inverse input covariance Σ⁻¹ of the task.

    ``w ← w − lr · Σ⁻¹ (G_i w − b_i) / i``: GD in the whitened coordinates ``Σ^{-1/2} x``. Ahn et
    al. 2023 (arXiv 2306.00297) show that one trained linear-attention layer on inputs
    N(0, Σ) implements one such step, with a preconditioner adapted to Σ. ``Σ`` is the task's
    ``input_covariance`` (the population one, not the ill-conditioned empirical one of a short
    prefix); identity, i.e. plain ``gd``, for tasks without one.
    """

    def preconditioner_for(self, task: Task) -> Tensor | None:
        covariance = getattr(task, "input_covariance", None)
        return None if covariance is None else torch.linalg.inv(covariance.double())


# ----------------------------------------------------------------------------------------------
# Sparse recovery: Lasso and orthogonal matching pursuit


def prefix_lasso(
    inputs: Tensor, targets: Tensor, alpha: float, tol: float = 1e-6, max_sweeps: int = 100
) -> Tensor:
    """Lasso ``argmin_w ‖X_{<i} w − y_{<i}‖² / (2i) + α‖w‖₁`` (scikit-learn's objective, no
    intercept) for every prefix, by cyclic coordinate descent on all prefixes together.

    Each (prompt, prefix) pair is one problem on the normalised moments ``Ĝ = G_i / i``,
    ``b̂ = b_i / i``; see ``lasso_coordinate_descent``. Cost: one sweep is d batched updates of
    all unconverged problems; converged problems are dropped after each sweep.
    """
    gram, moment, n_seen = prefix_moments(inputs, targets)
    batch, n, d = moment.shape
    gram = (gram / n_seen[:, None, None]).reshape(-1, d, d)
    moment = (moment / n_seen[:, None]).reshape(-1, d)
    weights = lasso_coordinate_descent(gram, moment, alpha, tol, max_sweeps)
    return _predict_with(weights.reshape(batch, n, d), inputs, targets)


def lasso_coordinate_descent(
    gram: Tensor, moment: Tensor, alpha: float, tol: float, max_sweeps: int
) -> Tensor:
    """Cyclic coordinate descent for ``P`` lasso problems ``wᵀĜw/2 − b̂ᵀw + α‖w‖₁`` at once.

    Coordinate j: ``w_j ← S(b̂_j − Σ_{k≠j} Ĝ_jk w_k, α) / Ĝ_jj`` (soft thresholding S), with
    ``Ĝ w`` kept up to date. A problem is done when no coefficient moved by more than ``tol``
    (relative to its largest coefficient, at least 1) in a sweep. After ``max_sweeps`` the rest
    are returned as they are: coordinate descent is slow on the strongly correlated columns of
    short prefixes (i < d), where 100 sweeps left ~10% of them above ``tol``. Coordinates with
    ``Ĝ_jj = 0`` (no data, inactive dimensions) stay 0. ``gram`` (P, d, d), ``moment`` (P, d).
    """
    diagonal = gram.diagonal(dim1=-2, dim2=-1)
    has_data = diagonal > 0
    safe_diagonal = torch.where(has_data, diagonal, torch.ones_like(diagonal))
    result = torch.zeros_like(moment)
    active = torch.arange(len(moment), device=moment.device)
    weights, fitted = torch.zeros_like(moment), torch.zeros_like(moment)  # w, Ĝ w
    for _ in range(max_sweeps):
        largest_change = torch.zeros_like(weights[:, 0])
        for j in range(moment.shape[-1]):
            correlation = moment[:, j] - fitted[:, j] + diagonal[:, j] * weights[:, j]
            shrunk = correlation.sign() * (correlation.abs() - alpha).clamp(min=0)
            updated = torch.where(has_data[:, j], shrunk / safe_diagonal[:, j], 0.0)
            change = updated - weights[:, j]
            fitted += change[:, None] * gram[:, :, j]
            weights[:, j] = updated
            largest_change = torch.maximum(largest_change, change.abs())
        done = largest_change <= tol * weights.abs().amax(-1).clamp(min=1)
        result[active[done]] = weights[done]
        if done.all():
            return result
        keep = ~done
        active, weights, fitted = active[keep], weights[keep], fitted[keep]
        gram, moment = gram[keep], moment[keep]
        diagonal, has_data, safe_diagonal = diagonal[keep], has_data[keep], safe_diagonal[keep]
    result[active] = weights
    return result


def prefix_orthogonal_matching_pursuit(inputs: Tensor, targets: Tensor, n_nonzero: int) -> Tensor:
    """Orthogonal matching pursuit with ``n_nonzero`` atoms for every prefix at once.

    Step t adds to the support the coordinate most correlated with the residual,
    ``argmax_j |b_i − G_i w|_j`` (scikit-learn's rule, ``X^T r`` without column normalisation),
    then refits least squares on the support: ``w = (G_i)_SS^{-1} (b_i)_S``, solved as one
    (B, n, d, d) system with the off-support block replaced by the identity. A prefix of i
    points stops after i atoms (its residual is then 0), so it interpolates.
    """
    gram, moment, _ = prefix_moments(inputs, targets)
    batch, n, d = moment.shape
    n_points_seen = torch.arange(n, device=moment.device)
    support = torch.zeros_like(moment, dtype=torch.bool)
    weights = torch.zeros_like(moment)
    identity = torch.eye(d, dtype=moment.dtype, device=moment.device)
    for step in range(min(n_nonzero, d)):
        residual_correlation = moment - (gram @ weights[..., None]).squeeze(-1)
        candidates = residual_correlation.abs().masked_fill(support, -1.0)
        chosen = candidates.argmax(-1, keepdim=True)  # (B, n, 1); ties: the lowest index
        growing = (n_points_seen > step)[None, :, None].expand(batch, n, 1)
        support = support.scatter(-1, chosen, growing) | support
        on = support.double()
        system = gram * on[..., :, None] * on[..., None, :] + identity * (1 - on)[..., None, :]
        solution, info = torch.linalg.solve_ex(system, (moment * on)[..., None])
        if (info != 0).any():  # a dependent support: the min-norm solution instead
            failed = info != 0
            solution[failed] = torch.linalg.pinv(system[failed]) @ (moment * on)[failed][..., None]
        weights = solution.squeeze(-1) * on
    return _predict_with(weights, inputs, targets)


class LassoOptions(AlgorithmOptions):
    alpha: float = Field(0.01, gt=0, description="L1 penalty")


@register_algorithm("lasso")
class Lasso(Algorithm):
    """Lasso (L1-penalised least squares, scikit-learn's objective), the sparse yardstick.

    Garg et al. 2022 compare with scikit-learn's Lasso for α in {1, 0.1, 0.01, 0.001, 0.0001}
    (their code, dtsip/in-context-learning, ``get_relevant_baselines``; the search did not find
    which one the paper's figure shows); the default is 0.01, the middle of that grid. Costs about
    10 s per 256 prompts of d = 20, 41 points on one CPU thread (``prefix_lasso``).
    """

    Options = LassoOptions
    options: LassoOptions

    def predict(self, episode: Episode) -> Tensor:
        return prefix_lasso(episode.inputs, episode.targets, self.options.alpha)


class OrthogonalMatchingPursuitOptions(AlgorithmOptions):
    n_nonzero: int | None = Field(
        None,
        ge=1,
        description="size of the support; null: the task's sparsity (sparse_linear_regression)",
    )


@register_algorithm("omp")
class OrthogonalMatchingPursuit(Algorithm):
    """Orthogonal matching pursuit: greedily pick n_nonzero coordinates, least squares on them."""

    Options = OrthogonalMatchingPursuitOptions
    options: OrthogonalMatchingPursuitOptions

    def __init__(self, task: Task, options: OrthogonalMatchingPursuitOptions | None = None) -> None:
        super().__init__(task, options)
        n_nonzero = self.options.n_nonzero
        if n_nonzero is None:
            n_nonzero = getattr(task, "sparsity", None)
        if n_nonzero is None:
            raise ConfigError(
                f"omp needs option n_nonzero for task {task.name!r}, which has no sparsity "
                "to take it from (only sparse_linear_regression has one)"
            )
        self.n_nonzero: int = n_nonzero

    def predict(self, episode: Episode) -> Tensor:
        return prefix_orthogonal_matching_pursuit(episode.inputs, episode.targets, self.n_nonzero)


# ----------------------------------------------------------------------------------------------
# Bayes posteriors: a finite task pool, a fixed representation, a mixture of Gaussian families


def pool_posterior(
    inputs: Tensor, targets: Tensor, pool: Tensor, noise_std: float
) -> tuple[Tensor, Tensor]:
    """Posterior mean over a uniform finite pool of weights, and the log evidence, per prefix.

    With ``r_{jm} = y_j − x_j · w_m``, the posterior weight of pool member m after i examples is
    ``∝ exp(−Σ_{j<i} r_{jm}² / 2σ²)`` (an exclusive cumulative sum over positions), the
    prediction ``Σ_m p_m x_i · w_m`` (Raventós et al.'s dMMSE) and the log evidence
    ``log mean_m N(y_{<i}; X_{<i} w_m, σ² I)``. Prompts are processed in chunks so that at most
    ``_POOL_CHUNK_ELEMENTS`` (prompt, position, member) triples are held, for pools of 2^15 and
    more. Returns predictions (B, n) in float64 and log evidences (B, n).
    """
    _check_shapes(inputs, targets)
    x, y, pool = inputs.double(), targets.double(), pool.to(inputs.device).double()
    batch, n, _ = x.shape
    variance = max(noise_std, _NOISE_FLOOR) ** 2
    n_seen = torch.arange(n, device=x.device, dtype=x.dtype)
    normaliser = 0.5 * n_seen * math.log(2 * math.pi * variance) + math.log(len(pool))
    chunk = max(1, _POOL_CHUNK_ELEMENTS // (n * len(pool)))
    predictions, evidences = [], []
    for start in range(0, batch, chunk):
        member_predictions = x[start : start + chunk] @ pool.T  # (b, n, M)
        residuals = member_predictions - y[start : start + chunk, :, None]
        log_likelihood = _exclusive_cumsum(residuals.pow(2)) / (-2 * variance)
        posterior = log_likelihood.softmax(-1)
        predictions.append((posterior * member_predictions).sum(-1))
        evidences.append(log_likelihood.logsumexp(-1) - normaliser)
    return torch.cat(predictions), torch.cat(evidences)


def gaussian_prior_posterior_mean(
    inputs: Tensor, targets: Tensor, noise_std: float, weight_std: float
) -> Tensor:
    """Posterior mean under ``w ~ N(0, τ² I)`` and noise σ: ridge with ``α = σ²/τ²``, or min-norm
    least squares when ``σ = 0``."""
    if noise_std == 0:
        return prefix_least_squares(inputs, targets)
    return prefix_ridge(inputs, targets, (noise_std / weight_std) ** 2)


def gaussian_log_evidence(
    inputs: Tensor, targets: Tensor, noise_std: float, weight_std: float
) -> Tensor:
    """``log N(y_{<i}; 0, τ² X_{<i} X_{<i}ᵀ + σ² I)`` for every prefix (B, n), in float64.

    One Cholesky factor ``L`` of the kernel over all n points serves every prefix: its leading
    blocks factor the prefix kernels, and with ``u = L⁻¹ y`` (u_j depends on y_{≤j} only) the
    log evidence of the first i targets is ``Σ_{j<i} (−u_j²/2 − log L_jj − log(2π)/2)``, the
    chain rule of sequential prediction. σ below ``_NOISE_FLOOR`` is raised to it.
    """
    _check_shapes(inputs, targets)
    x, y = inputs.double(), targets.double()
    variance = max(noise_std, _NOISE_FLOOR) ** 2
    identity = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    kernel = weight_std**2 * (x @ x.mT) + variance * identity
    chol = torch.linalg.cholesky(kernel)
    u = torch.linalg.solve_triangular(chol, y[..., None], upper=False).squeeze(-1)
    log_pivot = chol.diagonal(dim1=-2, dim2=-1).log()
    terms = -0.5 * u.pow(2) - log_pivot - 0.5 * math.log(2 * math.pi)
    return _exclusive_cumsum(terms)


def input_log_likelihood(inputs: Tensor, covariance: Tensor) -> Tensor:
    """``Σ_{j<=i} log N(x_j; 0, Σ)`` (B, n): what the inputs seen at prediction i (the query
    included) say about a component's input distribution."""
    x = inputs.double()
    chol = torch.linalg.cholesky(covariance.to(x).double())
    whitened = torch.linalg.solve_triangular(chol, x.mT, upper=False)  # (B, d, n)
    log_det = 2 * chol.diagonal().log().sum()
    d = x.shape[-1]
    per_point = -0.5 * (whitened.pow(2).sum(-2) + log_det + d * math.log(2 * math.pi))
    return per_point.cumsum(-1)


@register_algorithm("dmmse")
class PoolPosterior(Algorithm):
    """dMMSE: the posterior mean over the finite task pool (Raventós et al. 2023).

    The Bayes-optimal predictor for ``finite_pool_regression`` prompts drawn from the pool (see
    ``pool_posterior``). With an infinite pool (``pool_size: null``) it is the limit M → ∞, the
    posterior mean under the Gaussian prior (ridge with α = σ²/τ²). Reads the pool and σ from the
    task, so it takes no options.
    """

    applies_to = ("finite_pool_regression",)

    def __init__(self, task: FinitePoolRegression, options: AlgorithmOptions | None = None) -> None:
        super().__init__(task, options)
        self.pool = task.pool
        self.noise_std = task.options.noise_std
        self.weight_std = task.options.weight_std

    def predict(self, episode: Episode) -> Tensor:
        if self.pool is None:
            return gaussian_prior_posterior_mean(
                episode.inputs, episode.targets, self.noise_std, self.weight_std
            )
        predictions, _ = pool_posterior(episode.inputs, episode.targets, self.pool, self.noise_std)
        return predictions.to(episode.targets.dtype)


class RidgeOnFeaturesOptions(AlgorithmOptions):
    alpha: float | None = Field(
        None,
        gt=0,
        description="L2 penalty; null: the Bayes-optimal σ²/τ² of the task (least squares when "
        "σ = 0)",
    )


@register_algorithm("ridge_features")
class RidgeOnFeatures(Algorithm):
    """Ridge regression on the task's fixed representation Φ(x) (Bayes-optimal by default).

    For ``representation_regression`` (Guo et al. 2023) with w ~ N(0, τ² I) and noise σ the
    posterior mean is ridge on Φ(x) with α = σ²/τ² (least squares when σ = 0).
    """

    Options = RidgeOnFeaturesOptions
    options: RidgeOnFeaturesOptions
    applies_to = ("representation_regression",)

    def __init__(
        self, task: RepresentationRegression, options: RidgeOnFeaturesOptions | None = None
    ) -> None:
        super().__init__(task, options)
        self.features = task.features
        noise_std, weight_std = task.options.noise_std, task.options.weight_std
        bayes_alpha = (noise_std / weight_std) ** 2 if noise_std > 0 else None
        alpha = self.options.alpha
        self.alpha = alpha if alpha is not None else bayes_alpha  # None: least squares

    def predict(self, episode: Episode) -> Tensor:
        features = self.features(episode.inputs)
        if self.alpha is None:
            return prefix_least_squares(features, episode.targets)
        return prefix_ridge(features, episode.targets, self.alpha)


def _component_posterior(component: Task, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """A component's posterior-mean predictions and log evidence ``log p(X_{≤i}, y_{<i})``."""
    options = component.options
    if isinstance(component, FinitePoolRegression) and component.pool is not None:
        mean, evidence = pool_posterior(inputs, targets, component.pool, options.noise_std)
    else:  # Gaussian prior: a LinearRegression, or a pool that is infinite
        mean = gaussian_prior_posterior_mean(
            inputs, targets, options.noise_std, options.weight_std
        ).double()
        evidence = gaussian_log_evidence(inputs, targets, options.noise_std, options.weight_std)
    return mean, evidence + input_log_likelihood(inputs, component.input_covariance)


@register_algorithm("mixture_posterior")
class MixturePosterior(Algorithm):
    """Bayes posterior mean for a mixture of Gaussian linear families (and finite pools).

    ``pred_i = Σ_c p(c | X_{≤i}, y_{<i}) · E[y_i | c, X_{≤i}, y_{<i}]``: each component's
    posterior weight is its mixture weight times the likelihood of the inputs under its
    covariance and the Gaussian marginal likelihood of the targets (``gaussian_log_evidence``;
    for a finite pool the evidence of ``pool_posterior``); its posterior mean is ridge with
    σ²/τ² (least squares for σ = 0) or dMMSE. Components must be ``linear_regression`` /
    ``noisy_linear_regression`` (any input_decay) or ``finite_pool_regression`` with
    ``sample_from: pool``.
    """

    applies_to = ("mixture",)

    def __init__(self, task: Mixture, options: AlgorithmOptions | None = None) -> None:
        super().__init__(task, options)
        for component in task.components:
            is_gaussian = isinstance(component, LinearRegression)
            is_pool = isinstance(component, FinitePoolRegression) and (
                component.options.sample_from == "pool" or component.pool is None
            )
            if not (is_gaussian or is_pool):
                raise ConfigError(
                    "mixture_posterior needs components with a Gaussian or finite-pool prior "
                    "(linear_regression, noisy_linear_regression, finite_pool_regression with "
                    f"sample_from: pool), not {component.name!r}; set eval.algorithms without it"
                )
        self.components = task.components
        self.log_weights = task.probabilities.log()

    def predict(self, episode: Episode) -> Tensor:
        means, evidences = zip(
            *(_component_posterior(c, episode.inputs, episode.targets) for c in self.components),
            strict=True,
        )
        log_posterior = torch.stack(evidences, -1) + self.log_weights.to(episode.device)
        posterior = log_posterior.softmax(-1)  # (B, n, C)
        return (posterior * torch.stack(means, -1)).sum(-1).to(episode.targets.dtype)
