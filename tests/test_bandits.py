"""Bandit tasks and yardsticks: environments, histories, exact posteriors, hand-computed indices.

Statistical checks compare a sample statistic with its expected value within ``Z`` standard
errors (SE) computed from the sample size, so a correct implementation fails one only with
probability ~1e-4 per check; every generator is seeded, so a run is deterministic anyway.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor

from iclab.algorithms import build_algorithm
from iclab.episode import Episode
from iclab.metrics import score
from iclab.tasks import make_task
from iclab.tasks.bandits import arm_statistics, mixture_actions

Z = 4.0  # standard errors allowed between a sample statistic and its expected value
SCORE_TOLERANCE = 1e-5  # tie jitter (< 1e-6) plus float32 rounding of scores of order 1


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close_in_se(observed: float, expected: float, se: float, what: str) -> None:
    """|observed − expected| ≤ Z standard errors."""
    assert abs(observed - expected) <= Z * se, (
        f"{what}: observed {observed:.5f}, expected {expected:.5f} ± {Z} × {se:.5f}"
    )


def assert_mean_in_se(values: Tensor, expected: float, what: str) -> None:
    """The mean of i.i.d. ``values`` is ``expected`` within Z standard errors (sample SE)."""
    values = values.double().flatten()
    se = values.std().item() / math.sqrt(values.numel())
    assert_close_in_se(values.mean().item(), expected, se, what)


def assert_moments(draws: Tensor, mean: float, variance: float, what: str) -> None:
    """Sample mean and variance of i.i.d. ``draws`` match, each within Z standard errors
    (the variance's SE from the sample's fourth central moment: sqrt((m4 − s⁴) / N))."""
    draws = draws.double().flatten()
    n = draws.numel()
    centred = draws - draws.mean()
    sample_variance = centred.square().mean().item()
    assert_close_in_se(draws.mean().item(), mean, math.sqrt(variance / n), f"{what} mean")
    m4 = centred.pow(4).mean().item()
    se = math.sqrt(max(m4 - sample_variance**2, 1e-30) / n)
    assert_close_in_se(sample_variance, variance, se, f"{what} variance")


def assert_frequency(hits: Tensor, probability: float, what: str) -> None:
    """The share of True in ``hits`` (i.i.d.) is ``probability`` within Z binomial SEs."""
    n = hits.numel()
    se = math.sqrt(probability * (1 - probability) / n)
    assert_close_in_se(hits.double().mean().item(), probability, se, what)


def hand_episode(actions: list[int], rewards: list[float], n_arms: int, copies: int = 1) -> Episode:
    """A decision episode with a given history, repeated ``copies`` times (identical prompts)."""
    n = len(actions)
    return Episode(
        inputs=torch.ones(copies, n, 1),
        targets=torch.zeros(copies, n, dtype=torch.long),
        kind="decisions",
        meta={"action_values": torch.zeros(copies, n_arms)},
        actions=torch.tensor([actions]).expand(copies, -1).contiguous(),
        rewards=torch.tensor([rewards], dtype=torch.float32).expand(copies, -1).contiguous(),
    )


def prefix_statistics(actions: list[int], rewards: list[float], step: int, arm: int):
    """The rewards arm ``arm`` earned before ``step`` (float64, from the float32 rewards)."""
    rewards32 = torch.tensor(rewards, dtype=torch.float32).double().tolist()
    return [r for a, r in zip(actions[:step], rewards32[:step], strict=True) if a == arm]


def assert_same_episode(a: Episode, b: Episode) -> None:
    assert a.kind == b.kind and a.per_position().keys() == b.per_position().keys()
    for name, value in a.per_position().items():
        assert torch.equal(value, b.per_position()[name]), name
    assert a.meta.keys() == b.meta.keys()
    for key, value in a.meta.items():
        assert torch.equal(value, b.meta[key]), key


TASKS = [
    pytest.param("bandit", None, {"n_arms": 4}, id="gaussian"),
    pytest.param("bandit", None, {"n_arms": 4, "rewards": "bernoulli"}, id="bernoulli"),
    pytest.param("linear_bandit", 3, {"n_arms": 6}, id="linear"),
]


# --- 1. environments -------------------------------------------------------------------------


def test_gaussian_environments_match_the_prior():
    """Arm means ~ U[0, 1] and rewards = mean + noise_std·N(0, 1): a failure means the prior or
    the noise the task documents is not the one it draws."""
    task = make_task("bandit", None, {"n_arms": 5, "noise_std": 0.7})
    env = task.environments(4000, 20, generator(1))
    means = env.action_values
    assert means.shape == (4000, 5) and env.reward_table.shape == (4000, 20, 5)
    assert means.min() >= 0 and means.max() <= 1
    n = means.numel()
    assert_close_in_se(means.mean().item(), 0.5, math.sqrt(1 / 12 / n), "arm means' mean")
    # Var((U − 1/2)²) = E(U − 1/2)⁴ − (1/12)² = 1/80 − 1/144 = 1/180
    variance = (means.double() - 0.5).square().mean().item()
    assert_close_in_se(variance, 1 / 12, math.sqrt(1 / 180 / n), "arm means' variance")
    noise = (env.reward_table - means[:, None]).double()
    m = noise.numel()
    assert_close_in_se(noise.mean().item(), 0.0, 0.7 / math.sqrt(m), "noise mean")
    assert_close_in_se(noise.std().item(), 0.7, 0.7 / math.sqrt(2 * m), "noise std")


def test_bernoulli_environments_pay_one_with_the_arm_mean():
    """Rewards are 0 or 1, 1 with probability the arm's mean, checked per band of means (an
    inverted coin, 1 with probability 1 − mean, would pass a check of the overall share)."""
    task = make_task("bandit", None, {"n_arms": 5, "rewards": "bernoulli"})
    env = task.environments(2000, 20, generator(2))
    table = env.reward_table.double()
    means = env.action_values.double()[:, None].expand_as(table)
    assert set(table.unique().tolist()) == {0.0, 1.0}
    for low in (0.0, 0.25, 0.5, 0.75):
        band = (means >= low) & (means < low + 0.25)
        # given the means the coins are independent: Var(Σ (reward − mean)) = Σ mean(1 − mean)
        se = (means[band] * (1 - means[band])).sum().sqrt().item()
        gap = (table[band] - means[band]).sum().item()
        assert_close_in_se(gap, 0.0, se, f"Σ(reward − mean) for means in [{low}, {low + 0.25})")


def test_linear_environments_match_the_prior():
    """action_values = θ·φ_a exactly, θ ~ N(0, I), noise of std noise_std, features fixed by
    the structure seed: a failure means regret is measured against values the rewards do not
    have, or the prior differs from the documented one."""
    task = make_task("linear_bandit", 3, {"n_arms": 6, "noise_std": 0.4})
    env = task.environments(3000, 10, generator(3))
    theta = env.meta["theta"]
    assert torch.equal(env.action_values, theta @ task.features.T)
    assert_moments(theta, 0.0, 1.0, "θ")
    noise = (env.reward_table - env.action_values[:, None]).double()
    assert_close_in_se(noise.mean().item(), 0.0, 0.4 / math.sqrt(noise.numel()), "noise mean")
    assert_close_in_se(noise.std().item(), 0.4, 0.4 / math.sqrt(2 * noise.numel()), "noise std")
    same = make_task("linear_bandit", 3, {"n_arms": 6})
    other = make_task("linear_bandit", 3, {"n_arms": 6, "structure_seed": 1})
    assert torch.equal(same.features, task.features)
    assert not torch.equal(other.features, task.features)


# --- 2. histories ----------------------------------------------------------------------------


@pytest.mark.parametrize("history", ["dpt", "thompson"])
@pytest.mark.parametrize(("family", "n_dims", "options"), TASKS)
def test_histories_are_consistent_with_their_environments(family, n_dims, options, history):
    """Rewards are the reward table at the actions taken (``sample`` draws the environments
    first, so a generator with the same seed draws them again); targets are the optimal arm
    (dpt) or the demonstrator's own action (thompson). A failure means the context shows
    rewards the bandit did not pay, or the label is not the one the history kind promises."""
    task = make_task(family, n_dims, {**options, "history": history})
    batch, n = 64, 12
    episode = task.sample(batch, n, generator(4))
    env = task.environments(batch, n, generator(4))
    assert torch.equal(episode.meta["action_values"], env.action_values)
    assert episode.actions.min() >= 0 and episode.actions.max() < task.n_classes
    gathered = env.reward_table.gather(-1, episode.actions[..., None]).squeeze(-1)
    assert torch.equal(episode.rewards, gathered)
    if history == "dpt":
        best = env.action_values.argmax(-1)[:, None].expand(-1, n)
        assert torch.equal(episode.targets, best)
    else:
        assert torch.equal(episode.targets, episode.actions)


def test_dpt_mixture_puts_the_expected_share_of_prompts_on_one_arm():
    """Prompts whose actions are all one arm: their share equals what DPT's mixture implies,
    (1 − c)·Dirichlet(1) + c·(point mass), c ∈ {0, 0.1, …, 1}, computed by an independent
    numpy Monte Carlo. A wrong weight grid (e.g. c never 1), a non-uniform Dirichlet or a
    misplaced point mass moves the share by many SEs."""
    batch, n, k = 4000, 20, 5
    actions = mixture_actions(batch, n, k, generator(5))
    assert actions.shape == (batch, n) and actions.min() >= 0 and actions.max() < k
    observed = (actions == actions[:, :1]).all(-1).double().mean().item()

    rng = np.random.default_rng(0)
    draws = 400_000
    weight = rng.integers(0, 11, draws)[:, None] / 10
    probabilities = (1 - weight) * rng.dirichlet(np.ones(k), draws)
    probabilities[np.arange(draws), rng.integers(0, k, draws)] += weight[:, 0]
    per_draw = (probabilities**n).sum(-1)  # P(all n actions are one arm | the distribution)
    expected = per_draw.mean()
    se = math.sqrt(expected * (1 - expected) / batch + per_draw.var() / draws)
    assert expected > 0.1  # c = 1 alone gives 1/11: the check can see a missing point mass
    assert_close_in_se(observed, expected, se, "share of one-arm prompts")


def test_thompson_histories_learn_the_best_arm():
    """Thompson sampling's own histories pull the best arm more late than early (paired per
    prompt): a failure means the demonstrator does not use its history (or uses it wrongly),
    so algorithm distillation would imitate a policy that never improves."""
    task = make_task("bandit", None, {"n_arms": 3, "history": "thompson"})
    episode = task.sample(400, 30, generator(6))
    best = episode.actions == episode.meta["action_values"].argmax(-1)[:, None]
    gain = best[:, -8:].double().mean(-1) - best[:, :3].double().mean(-1)
    se = gain.std().item() / math.sqrt(gain.numel())
    assert gain.mean().item() > Z * se > 0


# --- 3. Thompson sampling's exact posterior --------------------------------------------------

ACTIONS = [0, 0, 1, 0, 0]  # the last pull's reward is far off: it must not reach step 4's draw


def posterior_draws(family: str, options: dict, rewards: list[float], copies: int = 20000):
    """Posterior draws (copies, n, K) for ``copies`` identical prompts with history ACTIONS."""
    task = make_task(family, None, {"n_arms": 3, **options})
    episode = hand_episode(ACTIONS, rewards, 3, copies)
    return task.posterior_sample(episode.actions, episode.rewards, generator(7))


def test_gaussian_posterior_is_the_truncated_normal():
    """Before step i, an arm pulled m times with mean ȳ is N(ȳ, σ²/m) cut to [0, 1] (uniform
    prior × Gaussian likelihood) and an unpulled arm is U[0, 1]; moments from scipy's
    truncnorm. A failure means Thompson sampling's yardstick is not the Bayes posterior, or
    that it sees the step's own reward."""
    noise_std, rewards = 0.3, [0.9, 1.1, 0.1, 0.95, -5.0]
    draws = posterior_draws("bandit", {"noise_std": noise_std}, rewards)
    for step in range(len(ACTIONS)):
        for arm in range(3):
            pulls = prefix_statistics(ACTIONS, rewards, step, arm)
            if pulls:
                centre, spread = np.mean(pulls), noise_std / math.sqrt(len(pulls))
                law = stats.truncnorm((0 - centre) / spread, (1 - centre) / spread, centre, spread)
            else:
                law = stats.uniform(0, 1)
            what = f"step {step} arm {arm}"
            assert_moments(draws[:, step, arm], law.mean(), law.var(), what)


def test_bernoulli_posterior_is_beta():
    """Before step i, an arm with s successes and f failures is Beta(1 + s, 1 + f): a failure
    means the Bernoulli Thompson posterior is wrong (e.g. successes and failures swapped)."""
    rewards = [1.0, 1.0, 0.0, 0.0, 1.0]
    draws = posterior_draws("bandit", {"rewards": "bernoulli"}, rewards)
    for step in range(len(ACTIONS)):
        for arm in range(3):
            pulls = prefix_statistics(ACTIONS, rewards, step, arm)
            successes = sum(pulls)
            law = stats.beta(1 + successes, 1 + len(pulls) - successes)
            assert_moments(draws[:, step, arm], law.mean(), law.var(), f"step {step} arm {arm}")


LINEAR_ACTIONS = [0, 2, 2, 1, 3]
LINEAR_REWARDS = [0.3, -0.2, 0.1, 0.7, 9.0]


def hand_linear_posterior(features: np.ndarray, step: int, noise_std: float):
    """θ's posterior from the prior N(0, I) and the pulls before ``step``, by hand (float64)."""
    phi = features[LINEAR_ACTIONS[:step]].reshape(step, features.shape[1])
    r = np.array(LINEAR_REWARDS[:step], dtype=np.float32).astype(np.float64)
    covariance = np.linalg.inv(np.eye(features.shape[1]) + phi.T @ phi / noise_std**2)
    return covariance @ phi.T @ r / noise_std**2, covariance


def test_linear_posterior_is_the_closed_form():
    """``LinearBandit.posterior`` before every step equals (I + ΦᵀΦ/σ²)⁻¹ and (…)⁻¹Φᵀr/σ² over
    the pulls before it, and the draws of θ·φ_a have that mean and variance. A failure means
    linear Thompson sampling does not sample the Bayes posterior (or sees the step's reward)."""
    noise_std = 0.5
    task = make_task("linear_bandit", 2, {"n_arms": 4, "noise_std": noise_std})
    features = task.features.double().numpy()
    episode = hand_episode(LINEAR_ACTIONS, LINEAR_REWARDS, 4)
    means, covariances = task.posterior(episode.actions, episode.rewards)
    for step in range(len(LINEAR_ACTIONS)):
        mean, covariance = hand_linear_posterior(features, step, noise_std)
        np.testing.assert_allclose(means[0, step].numpy(), mean, rtol=0, atol=1e-10)
        np.testing.assert_allclose(covariances[0, step].numpy(), covariance, rtol=0, atol=1e-10)

    step = 4
    mean, covariance = hand_linear_posterior(features, step, noise_std)
    many = hand_episode(LINEAR_ACTIONS, LINEAR_REWARDS, 4, copies=20000)
    draws = task.posterior_sample(many.actions, many.rewards, generator(8))[:, step]
    for arm in range(4):
        phi = features[arm]
        assert_moments(draws[:, arm], phi @ mean, phi @ covariance @ phi, f"θ·φ_{arm}")


# --- 4. hand-computed indices ----------------------------------------------------------------

HAND_ACTIONS = [0, 1, 2, 0, 0, 1, 2, 1]
HAND_REWARDS = [0.2, 0.9, 0.4, 0.6, 0.1, 0.5, 0.45, 0.7]


def hand_scores(spec: str, index) -> tuple[Tensor, list[list[float | None]]]:
    """``spec``'s (n, K) scores on the hand history and ``index(pulled rewards, step)`` for
    every step and arm (``None`` where the hand formula does not apply)."""
    algorithm = build_algorithm(spec, make_task("bandit", None, {"n_arms": 3}))
    scores = algorithm.predict(hand_episode(HAND_ACTIONS, HAND_REWARDS, 3))[0]
    expected = [
        [index(prefix_statistics(HAND_ACTIONS, HAND_REWARDS, step, arm), step) for arm in range(3)]
        for step in range(len(HAND_ACTIONS))
    ]
    return scores, expected


def assert_scores(scores: Tensor, expected: list[list[float | None]]) -> None:
    for step, row in enumerate(expected):
        for arm, value in enumerate(row):
            if value is not None:
                got = scores[step, arm].item()
                assert abs(got - value) < SCORE_TOLERANCE, (step, arm, got, value)


def test_ucb1_index_and_untried_arms_first():
    """UCB1's score is ȳ + c·sqrt(2 ln t / pulls) once an arm is tried, and an untried arm is
    always chosen before any tried one: a failure means UCB1 is not the documented algorithm."""
    c = 2.0

    def index(pulls, step):
        return np.mean(pulls) + c * math.sqrt(2 * math.log(step) / len(pulls)) if pulls else None

    scores, expected = hand_scores(f"ucb(c={c})", index)
    assert_scores(scores, expected)
    for step in range(len(HAND_ACTIONS)):
        untried = set(range(3)) - set(HAND_ACTIONS[:step])
        if untried:
            assert scores[step].argmax().item() in untried, step
        else:
            assert scores[step].argmax().item() == int(np.argmax(expected[step])), step
    # the bonus matters: at step 6 UCB1 picks the arm pulled once (2), not the best mean (1)
    assert scores[6].argmax().item() == 2
    means = [np.mean(prefix_statistics(HAND_ACTIONS, HAND_REWARDS, 6, arm)) for arm in range(3)]
    assert int(np.argmax(means)) == 1


def test_lcb_index():
    """LCB's score is ȳ − c/sqrt(max(pulls, 1)), an unpulled arm counting as mean 0."""
    c = 0.5

    def index(pulls, step):
        return (np.mean(pulls) if pulls else 0.0) - c / math.sqrt(max(len(pulls), 1))

    assert_scores(*hand_scores(f"lcb(c={c})", index))


def test_greedy_picks_the_best_empirical_mean():
    """Once every arm is tried, greedy's score is the empirical mean and its choice the best."""

    def index(pulls, step):
        return np.mean(pulls) if pulls else None

    scores, expected = hand_scores("greedy", index)
    assert_scores(scores, expected)
    for step in range(3, len(HAND_ACTIONS)):
        assert scores[step].argmax().item() == int(np.argmax(expected[step])), step


def all_tried(episode: Episode, n_arms: int) -> Tensor:
    """(B, n) bool: the positions before which every arm has been pulled."""
    pulls, _ = arm_statistics(episode.actions, episode.rewards, n_arms)
    return (pulls > 0).all(-1)


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_explores_with_probability_epsilon(epsilon):
    """Where greedy's choice is determined (every arm tried), ε-greedy agrees with it with
    probability (1 − ε) + ε/K: always for ε = 0, by chance alone for ε = 1, whose choices are
    uniform over the arms. A failure means ε is ignored or exploration is not uniform."""
    k = 3
    task = make_task("bandit", None, {"n_arms": k})
    episode = task.sample(1000, 20, generator(9))
    tried = all_tried(episode, k)
    greedy = build_algorithm("greedy", task).predict(episode).argmax(-1)[tried]
    choices = build_algorithm(f"epsilon_greedy(epsilon={epsilon})", task).predict(episode)
    choices = choices.argmax(-1)[tried]
    agree = choices == greedy
    if epsilon == 0:
        assert agree.all()
    else:
        assert_frequency(agree, 1 - epsilon + epsilon / k, "agreement with greedy")
    if epsilon == 1:
        for arm in range(k):
            assert_frequency(choices == arm, 1 / k, f"share of arm {arm}")


def test_linucb_index():
    """LinUCB's score is φ·θ̂ + α·sqrt(φᵀA⁻¹φ), A = λI + Σφφᵀ and θ̂ = A⁻¹Σrφ over the pulls
    before the step, by hand in float64 with non-default α and λ."""
    alpha, ridge = 1.5, 0.5
    task = make_task("linear_bandit", 2, {"n_arms": 4})
    algorithm = build_algorithm(f"linucb(alpha={alpha}, ridge={ridge})", task)
    scores = algorithm.predict(hand_episode(LINEAR_ACTIONS, LINEAR_REWARDS, 4))[0]
    features = task.features.double().numpy()
    rewards = np.array(LINEAR_REWARDS, dtype=np.float32).astype(np.float64)
    for step in range(len(LINEAR_ACTIONS)):
        phi = features[LINEAR_ACTIONS[:step]].reshape(step, 2)
        inverse = np.linalg.inv(ridge * np.eye(2) + phi.T @ phi)
        theta = inverse @ phi.T @ rewards[:step]
        for arm in range(4):
            value = features[arm] @ theta + alpha * math.sqrt(
                features[arm] @ inverse @ features[arm]
            )
            assert abs(scores[step, arm].item() - value) < SCORE_TOLERANCE, (step, arm)


# --- 5. regret -------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "n_dims", "options"), TASKS)
def test_optimal_policy_has_zero_regret(family, n_dims, options):
    """The oracle's regret is 0 at every step, while greedy's is not (so the metric can see a
    wrong choice): a failure means regret or the oracle is computed against the wrong values."""
    task = make_task(family, n_dims, options)
    episode = task.sample(256, 15, generator(10))
    optimal = score(build_algorithm("optimal", task).predict(episode), episode)
    assert optimal.shape == (256, 15) and torch.equal(optimal, torch.zeros_like(optimal))
    assert score(build_algorithm("greedy", task).predict(episode), episode).mean() > 0.01


def test_thompson_offline_regret_decreases_with_steps():
    """On DPT histories, Thompson sampling's regret at step 40 is below its regret at step 0
    (uniform guess: 1/3 for 5 arms) by many paired SEs: a failure means its posterior ignores
    the history."""
    task = make_task("bandit", None, {"n_arms": 5})
    episode = task.sample(2000, 41, generator(11))
    regret = score(build_algorithm("thompson", task).predict(episode), episode)
    assert_mean_in_se(regret[:, 0], 1 / 3, "regret of a uniform first guess")  # E max − E mean
    drop = regret[:, 0] - regret[:, 40]
    se = drop.std().item() / math.sqrt(drop.numel())
    assert drop.mean().item() > max(Z * se, 0.1)


# --- 6. determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("history", ["dpt", "thompson"])
@pytest.mark.parametrize(("family", "n_dims", "options"), TASKS)
def test_sampling_is_a_function_of_the_seed(family, n_dims, options, history):
    """The same generator seed gives the same episode, another seed another one."""
    task = make_task(family, n_dims, {**options, "history": history})
    first, again = (task.sample(32, 10, generator(12)) for _ in range(2))
    assert_same_episode(first, again)
    other = task.sample(32, 10, generator(13))
    assert not torch.equal(first.meta["action_values"], other.meta["action_values"])
    assert not torch.equal(first.actions, other.actions)


@pytest.mark.parametrize("spec", ["thompson", "epsilon_greedy(epsilon=0.5)", "ucb", "greedy"])
@pytest.mark.parametrize(("family", "n_dims", "options"), TASKS[:2])
def test_predict_is_a_function_of_the_history(spec, family, n_dims, options):
    """An algorithm answers the same history the same way every call (its generator is reseeded
    from its ``seed`` option), even the randomised ones."""
    task = make_task(family, n_dims, options)
    episode = task.sample(64, 12, generator(14))
    algorithm = build_algorithm(spec, task)
    assert torch.equal(algorithm.predict(episode), algorithm.predict(episode))


def test_seed_option_changes_thompson_draws():
    """Another ``seed`` gives other posterior draws (nearly all of them), the same seed the same."""
    task = make_task("bandit", None, {"n_arms": 4})
    episode = task.sample(64, 12, generator(15))
    draws = build_algorithm("thompson", task).predict(episode)
    assert torch.equal(draws, build_algorithm("thompson(seed=0)", task).predict(episode))
    other = build_algorithm("thompson(seed=1)", task).predict(episode)
    assert (draws != other).double().mean() > 0.99


# --- 7. tie-breaking -------------------------------------------------------------------------


def tied_first_choices(spec: str, rewards: str, n_arms: int, batch: int) -> Tensor:
    """``spec``'s choices over ``batch`` prompts at a step where every arm scores the same:
    with no history (``rewards="none"``), or after one pull of each arm, all paying 1."""
    task = make_task("bandit", None, {"n_arms": n_arms, "rewards": "bernoulli"})
    steps = [*range(n_arms), 0]
    episode = hand_episode(steps, [1.0] * len(steps), n_arms, copies=batch)
    step = 0 if rewards == "none" else n_arms
    return build_algorithm(spec, task).predict(episode)[:, step].argmax(-1)


@pytest.mark.parametrize("spec", ["greedy", "ucb", "lcb"])
@pytest.mark.parametrize("rewards", ["none", "all_one"])
def test_ties_are_broken_uniformly_at_random(spec, rewards):
    """Where all arms score the same, every arm is chosen with probability 1/K: a failure
    means the tie-break favours some arms (e.g. the first), so the order arms are tried in,
    or the arm chosen among equal empirical means, is not random as documented."""
    n_arms, batch = 4, 8000
    choices = tied_first_choices(spec, rewards, n_arms, batch)
    for arm in range(n_arms):
        assert_frequency(choices == arm, 1 / n_arms, f"{spec}: share of arm {arm}")
