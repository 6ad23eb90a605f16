"""Reference regression learners: each batched algorithm equals a plain per-prefix loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from iclab.algorithms import ALGORITHMS, build_algorithm
from iclab.algorithms import regression as regression_algorithms
from iclab.algorithms.regression import prefix_least_squares, prefix_ridge
from iclab.episode import Episode
from iclab.registry import UnknownNameError
from iclab.specs import SpecError
from iclab.tasks import make_task
from iclab.tasks.regression import LinearRegression

N_DIMS = 6
N_POINTS = 15
NOISE_STD = 0.5
WEIGHT_STD = 2.0
TOLERANCE = 1e-5  # float64 throughout; the batched forms agree with the loops to ~1e-8 or better

PROMPTS = ["gaussian", "zeroed_dims", "mixed_rank", "repeated_point"]


def make_episode(
    prompts: str = "gaussian",
    batch_size: int = 24,
    n_points: int = N_POINTS,
    n_dims: int = N_DIMS,
    noise_std: float = NOISE_STD,
    seed: int = 0,
) -> Episode:
    """Noisy float64 linear-regression prompts; ``prompts`` picks a rank-deficient variant.

    ``zeroed_dims``: the trailing half of the inputs is 0 in every prompt (the curriculum).
    ``mixed_rank``: that only for the first half of the prompts (each needs the general fallback).
    ``repeated_point``: input 4 repeats input 1 (with its own noisy target), inside the
    underdetermined prefixes.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, n_points, n_dims, generator=generator, dtype=torch.float64)
    if prompts == "zeroed_dims":
        inputs[:, :, n_dims // 2 :] = 0.0
    elif prompts == "mixed_rank":
        inputs[: batch_size // 2, :, n_dims // 2 :] = 0.0
    elif prompts == "repeated_point":
        inputs[:, 4] = inputs[:, 1]
    elif prompts != "gaussian":
        raise ValueError(prompts)
    w = WEIGHT_STD * torch.randn(batch_size, n_dims, generator=generator, dtype=torch.float64)
    noise = torch.randn(batch_size, n_points, generator=generator, dtype=torch.float64)
    targets = torch.einsum("bnd,bd->bn", inputs, w) + noise_std * noise
    return Episode(inputs=inputs, targets=targets, meta={"w": w})


# Per-prefix references: the textbook formula for one prefix, looped over prefixes.

WeightsOfPrefix = Callable[[Tensor, Tensor], Tensor]  # (X (B, i, d), y (B, i)) -> w (B, d)


def loop_over_prefixes(episode: Episode, weights_of_prefix: WeightsOfPrefix) -> Tensor:
    """``pred_i = x_i · w(X_{<i}, y_{<i})``, one prefix at a time, 0 at ``i = 0``."""
    x, y = episode.inputs.double(), episode.targets.double()
    preds = torch.zeros_like(y)
    for i in range(1, episode.n_points):
        w = weights_of_prefix(x[:, :i], y[:, :i])
        preds[:, i] = (w * x[:, i]).sum(-1)
    return preds


def pinv_weights(x: Tensor, y: Tensor) -> Tensor:
    return (torch.linalg.pinv(x) @ y[..., None]).squeeze(-1)


def averaging_weights(x: Tensor, y: Tensor) -> Tensor:
    return (y[..., None] * x).mean(dim=1)


def ridge_weights(alpha: float) -> WeightsOfPrefix:
    def weights(x: Tensor, y: Tensor) -> Tensor:
        identity = torch.eye(x.shape[-1], dtype=x.dtype)
        return torch.linalg.solve(x.mT @ x + alpha * identity, x.mT @ y[..., None]).squeeze(-1)

    return weights


def spectral_ridge_weights(alpha: float) -> WeightsOfPrefix:
    """Ridge through the SVD, ``w = V diag(s / (s² + α)) U^T y``: accurate for any ``α``."""

    def weights(x: Tensor, y: Tensor) -> Tensor:
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        cutoff = max(x.shape[-2:]) * torch.finfo(x.dtype).eps * s[:, :1]
        gain = torch.where(s > cutoff, s / (s**2 + alpha), torch.zeros_like(s))
        return (vh.mT @ (gain * (u.mT @ y[..., None]).squeeze(-1))[..., None]).squeeze(-1)

    return weights


def posterior_mean_weights(noise_std: float, weight_std: float) -> WeightsOfPrefix:
    """Mean of the Gaussian posterior of w ~ N(0, τ² I) given y = X w + N(0, σ² I)."""

    def weights(x: Tensor, y: Tensor) -> Tensor:
        identity = torch.eye(x.shape[-1], dtype=x.dtype)
        precision = x.mT @ x / noise_std**2 + identity / weight_std**2
        covariance = torch.linalg.inv(precision)
        return (covariance @ x.mT @ y[..., None]).squeeze(-1) / noise_std**2

    return weights


def knn_loop(episode: Episode, k: int) -> Tensor:
    """Mean target of the ``k`` nearest earlier inputs, one prefix at a time (ties: earlier)."""
    x, y = episode.inputs.double(), episode.targets.double()
    preds = torch.zeros_like(y)
    for i in range(1, episode.n_points):
        distance = torch.linalg.vector_norm(x[:, :i] - x[:, i : i + 1], dim=-1)  # (B, i)
        nearest = distance.argsort(dim=1, stable=True)[:, :k]
        preds[:, i] = y[:, :i].gather(1, nearest).mean(dim=1)
    return preds


def noisy_task(n_dims: int = N_DIMS) -> LinearRegression:
    options = LinearRegression.Options(noise_std=NOISE_STD, weight_std=WEIGHT_STD)
    return LinearRegression(n_dims, options)


def noiseless_task(n_dims: int = N_DIMS) -> LinearRegression:
    return LinearRegression(n_dims, LinearRegression.Options(noise_std=0.0, weight_std=WEIGHT_STD))


# name: (algorithm built for a task, per-prefix reference)
CASES: dict[str, tuple[Callable[[], object], Callable[[Episode], Tensor]]] = {
    "averaging": (
        lambda: build_algorithm("averaging", noisy_task()),
        lambda episode: loop_over_prefixes(episode, averaging_weights),
    ),
    "knn_k1": (
        lambda: build_algorithm("knn(k=1)", noisy_task()),
        lambda episode: knn_loop(episode, k=1),
    ),
    "knn_k3": (
        lambda: build_algorithm("knn(k=3)", noisy_task()),
        lambda episode: knn_loop(episode, k=3),
    ),
    "least_squares": (
        lambda: build_algorithm("least_squares", noisy_task()),
        lambda episode: loop_over_prefixes(episode, pinv_weights),
    ),
    "ridge": (
        lambda: build_algorithm("ridge(alpha=0.1)", noisy_task()),
        lambda episode: loop_over_prefixes(episode, ridge_weights(0.1)),
    ),
    "bayes_optimal_noisy": (
        lambda: build_algorithm("bayes_optimal", noisy_task()),
        lambda episode: loop_over_prefixes(episode, posterior_mean_weights(NOISE_STD, WEIGHT_STD)),
    ),
    "bayes_optimal_noiseless": (
        lambda: build_algorithm("bayes_optimal", noiseless_task()),
        lambda episode: loop_over_prefixes(episode, pinv_weights),
    ),
}


# The learners of iclab.algorithms.regression; the other families' learners are tested in
# their own files.
LINEAR_REGRESSION_LEARNERS = [
    name for name, cls in ALGORITHMS if cls.__module__ == "iclab.algorithms.regression"
]


@pytest.mark.parametrize("prompts", PROMPTS)
@pytest.mark.parametrize("case", list(CASES))
def test_batched_algorithm_equals_per_prefix_loop(case: str, prompts: str) -> None:
    build, reference = CASES[case]
    episode = make_episode(prompts)
    preds = build().predict(episode)
    torch.testing.assert_close(preds, reference(episode), rtol=0, atol=TOLERANCE)


def test_least_squares_recovers_w_exactly_when_k_at_least_d() -> None:
    episode = make_episode(noise_std=0.0)
    preds = build_algorithm("least_squares", noiseless_task()).predict(episode)
    truth = torch.einsum("bnd,bd->bn", episode.inputs, episode.meta["w"])
    torch.testing.assert_close(preds[:, N_DIMS:], truth[:, N_DIMS:], rtol=0, atol=1e-8)
    # With fewer examples than dimensions w is not determined, so the predictions must differ.
    assert (preds[:, 1:N_DIMS] - truth[:, 1:N_DIMS]).abs().max() > 0.1


def test_least_squares_recovers_w_on_float32_task_prompts() -> None:
    n_dims = 20
    episode = LinearRegression(n_dims).sample(256, 41, torch.Generator().manual_seed(0))
    preds = prefix_least_squares(episode.inputs, episode.targets)
    truth = torch.einsum("bnd,bd->bn", episode.inputs, episode.meta["w"])
    assert preds.dtype == torch.float32
    # float32 targets carry ~1e-7 relative rounding, which the square system at k = d amplifies by
    # its condition number; from k = d + 1 on, the error is at the level of that rounding.
    torch.testing.assert_close(preds[:, n_dims + 1 :], truth[:, n_dims + 1 :], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("n_points", "n_dims"),
    [(1, 3), (2, 3), (4, 6), (6, 6), (7, 6), (8, 6), (30, 3), (9, 1)],
)
def test_least_squares_matches_pinv_for_every_prompt_length(n_points: int, n_dims: int) -> None:
    episode = make_episode(n_points=n_points, n_dims=n_dims, seed=1)
    preds = prefix_least_squares(episode.inputs, episode.targets)
    expected = loop_over_prefixes(episode, pinv_weights)
    torch.testing.assert_close(preds, expected, rtol=0, atol=TOLERANCE)


def test_least_squares_of_all_zero_inputs_predicts_zero() -> None:
    episode = make_episode()
    episode.inputs.zero_()
    preds = prefix_least_squares(episode.inputs, episode.targets)
    assert torch.equal(preds, torch.zeros_like(preds))


def test_least_squares_matches_pinv_on_curriculum_prompts() -> None:
    task = LinearRegression(8, LinearRegression.Options(noise_std=0.1))
    episode = task.sample(64, 20, torch.Generator().manual_seed(0), n_dims_active=3)
    preds = prefix_least_squares(episode.inputs, episode.targets)
    expected = loop_over_prefixes(episode, pinv_weights).float()
    torch.testing.assert_close(preds, expected, rtol=0, atol=1e-5)


def test_least_squares_falls_back_only_for_rank_deficient_prompts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eigen_form = regression_algorithms._eigen_form
    fallback_batch_sizes: list[int] = []

    def recording_eigen_form(x: Tensor, y: Tensor, alpha: float) -> Tensor:
        fallback_batch_sizes.append(x.shape[0])
        return eigen_form(x, y, alpha)

    monkeypatch.setattr(regression_algorithms, "_eigen_form", recording_eigen_form)
    for prompts, expected_sizes in [
        ("gaussian", []),
        ("zeroed_dims", []),  # dimensions zero in every prompt are dropped, leaving full rank
        ("mixed_rank", [12]),  # the 12 prompts with zeroed dimensions, and only them
        ("repeated_point", [24]),
    ]:
        fallback_batch_sizes.clear()
        episode = make_episode(prompts)
        prefix_least_squares(episode.inputs, episode.targets)
        assert fallback_batch_sizes == expected_sizes, prompts


def test_ridge_equals_closed_form_and_gaussian_posterior_mean() -> None:
    alpha = NOISE_STD**2 / WEIGHT_STD**2
    episode = make_episode()
    preds = prefix_ridge(episode.inputs, episode.targets, alpha)
    closed_form = loop_over_prefixes(episode, ridge_weights(alpha))
    posterior_mean = loop_over_prefixes(episode, posterior_mean_weights(NOISE_STD, WEIGHT_STD))
    torch.testing.assert_close(preds, closed_form, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(preds, posterior_mean, rtol=0, atol=TOLERANCE)


def test_bayes_optimal_equals_gaussian_posterior_mean_of_the_task() -> None:
    task = noisy_task()
    algorithm = build_algorithm("bayes_optimal", task)
    episode = make_episode()
    posterior_mean = loop_over_prefixes(episode, posterior_mean_weights(NOISE_STD, WEIGHT_STD))
    torch.testing.assert_close(algorithm.predict(episode), posterior_mean, rtol=0, atol=TOLERANCE)


def test_bayes_optimal_without_noise_is_min_norm_least_squares() -> None:
    episode = make_episode(noise_std=0.0)
    preds = build_algorithm("bayes_optimal", noiseless_task()).predict(episode)
    torch.testing.assert_close(
        preds, prefix_least_squares(episode.inputs, episode.targets), rtol=0, atol=0
    )


@pytest.mark.parametrize("prompts", ["gaussian", "mixed_rank"])
@pytest.mark.parametrize("alpha", [1e-6, 1e-10])
def test_ridge_stays_exact_for_tiny_alpha(alpha: float, prompts: str) -> None:
    # The closed form (X^T X + α I)^{-1} is itself inaccurate here, so compare with the SVD.
    episode = make_episode(prompts)
    preds = prefix_ridge(episode.inputs, episode.targets, alpha)
    expected = loop_over_prefixes(episode, spectral_ridge_weights(alpha))
    torch.testing.assert_close(preds, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", LINEAR_REGRESSION_LEARNERS)
def test_predictions_never_use_current_or_future_targets(name: str) -> None:
    algorithm = build_algorithm(name, noisy_task())
    episode = make_episode("mixed_rank")
    preds = algorithm.predict(episode)
    generator = torch.Generator().manual_seed(1)
    for i in range(episode.n_points):
        targets = episode.targets.clone()
        targets[:, i:] = 10 * torch.randn(targets[:, i:].shape, generator=generator).double()
        changed = algorithm.predict(Episode(inputs=episode.inputs, targets=targets))
        torch.testing.assert_close(changed[:, : i + 1], preds[:, : i + 1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", LINEAR_REGRESSION_LEARNERS)
def test_predictions_never_use_future_inputs(name: str) -> None:
    # Exact in mathematics; in floating point a later input can change the path taken (a
    # fallback, a dropped dimension), hence a tolerance.
    algorithm = build_algorithm(name, noisy_task())
    episode = make_episode("mixed_rank")
    preds = algorithm.predict(episode)
    generator = torch.Generator().manual_seed(2)
    for i in range(episode.n_points - 1):
        inputs = episode.inputs.clone()
        inputs[:, i + 1 :] = torch.randn(inputs[:, i + 1 :].shape, generator=generator).double()
        inputs[:, -1] = inputs[:, 0]  # and a repeated point
        changed = algorithm.predict(Episode(inputs=inputs, targets=episode.targets))
        torch.testing.assert_close(changed[:, : i + 1], preds[:, : i + 1], rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", LINEAR_REGRESSION_LEARNERS)
def test_every_algorithm_keeps_shape_dtype_and_predicts_zero_without_examples(name: str) -> None:
    task = noisy_task()
    episode = task.sample(8, 12, torch.Generator().manual_seed(0))
    preds = build_algorithm(name, task).predict(episode)
    assert preds.shape == episode.targets.shape
    assert preds.dtype == episode.targets.dtype == torch.float32
    assert preds.isfinite().all()
    assert torch.equal(preds[:, 0], torch.zeros_like(preds[:, 0]))


@pytest.mark.parametrize("k", ["0", "-1", "1.5", "three"])
def test_knn_rejects_k_that_is_not_a_positive_integer(k: str) -> None:
    with pytest.raises(SpecError, match=r"knn\(k=.*\)': k: Input should be"):
        build_algorithm(f"knn(k={k})", noisy_task())


@pytest.mark.parametrize("alpha", ["0.0", "-0.1", ".nan", ".inf"])
def test_ridge_rejects_alpha_that_is_not_positive_and_finite(alpha: str) -> None:
    with pytest.raises(SpecError, match="alpha: Input should be"):
        build_algorithm(f"ridge(alpha={alpha})", noisy_task())


def test_bayes_optimal_rejects_a_task_that_is_not_linear_regression() -> None:
    with pytest.raises(ValueError, match="applies to linear_regression, noisy_linear_regression"):
        build_algorithm("bayes_optimal", make_task("sparse_linear_regression", N_DIMS))


def test_bayes_optimal_rejects_options_that_would_override_the_task() -> None:
    with pytest.raises(SpecError, match=r"noise_std: unknown option \(it takes no options\)"):
        build_algorithm("bayes_optimal(noise_std=1.0)", noisy_task())


def test_build_algorithm_of_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownNameError) as error:
        build_algorithm("ordinary_least_squares", noisy_task())
    message = str(error.value)
    assert "'ordinary_least_squares'" in message
    for name in ["averaging", "bayes_optimal", "knn", "least_squares", "ridge", "zero"]:
        assert name in message


@pytest.mark.parametrize("name", LINEAR_REGRESSION_LEARNERS)
def test_every_algorithm_has_a_one_line_summary_for_the_cli(name: str) -> None:
    algorithm_class = ALGORITHMS.get(name)
    summary = (algorithm_class.__doc__ or "").splitlines()[0]
    assert algorithm_class.name == name
    assert summary.strip() and summary.endswith(".") and len(summary) <= 100
