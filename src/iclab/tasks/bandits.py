"""Bandits as in-context decision tasks (in-context reinforcement learning).

A prompt is an interaction history with one bandit drawn from a prior: at each step an action
(an arm), and the reward it earned. Learners are trained to pick actions from the history alone
(``kind="decisions"``, ``iclab.kinds.decisions``), offline on histories this module collects, and
are evaluated online too (``iclab.evaluation.rollouts``): they act, the bandit answers.

Everything is vectorised in torch and drawn from the given generator. The reward every action
would earn at every step is drawn up front (``Environments.reward_table``), so learners acting
differently on the same prompts meet the same noise (common random numbers: their paired
differences are far tighter than their separate curves). The prior lives with the task, so the
Thompson sampling yardstick samples the exact posterior (``posterior_sample``).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from iclab.episode import Episode
from iclab.kinds import TaskIO
from iclab.tasks.base import Task, TaskOptions, register_task

OBSERVATION_DIMS = 1  # a bandit has one state: every observation is the constant 1, as in DPT


@dataclass(frozen=True)
class Environments:
    """A batch of environments for ``n`` steps: what every action would earn at every step.

    ``observations`` (B, n, d) what a learner sees before acting at each step; ``action_values``
    (B, K) each action's expected reward (regret is measured against its best);
    ``reward_table`` (B, n, K) the reward action a earns if taken at step t; ``meta`` the drawn
    parameters (e.g. a linear bandit's ``theta``), batch first.
    """

    observations: Tensor
    action_values: Tensor
    reward_table: Tensor
    meta: dict[str, Tensor] = field(default_factory=dict)

    def rewards(self, actions: Tensor, steps: slice | int = slice(None)) -> Tensor:
        """Rewards of ``actions`` ((B, n) for all steps, (B,) for step ``steps``)."""
        table = self.reward_table[:, steps]
        return table.gather(-1, actions[..., None]).squeeze(-1)


class BanditOptions(TaskOptions):
    n_arms: int = Field(5, ge=2, le=1024, description="actions to choose from (K)")
    noise_std: float = Field(0.3, gt=0.0, description="standard deviation of Gaussian reward noise")
    history: Literal["dpt", "thompson"] = Field(
        "dpt",
        description=(
            "training histories: dpt (Lee et al. 2023: arms drawn from a random mixture of a "
            "Dirichlet(1) distribution and a point mass, label = the optimal arm) or thompson "
            "(algorithm distillation, Laskin et al. 2022: Thompson sampling's own history, "
            "label = its next action)"
        ),
    )


class DecisionTask(Task):
    """A family of environments that learners act in. Subclasses draw environments
    (``environments``), know their prior (``posterior_sample``) and collect training
    histories with ``sample``."""

    kind = "decisions"
    default_n_dims = OBSERVATION_DIMS
    default_n_points = 50
    options: BanditOptions

    @property
    def n_classes(self) -> int:
        return self.options.n_arms

    def io(self) -> TaskIO:
        return TaskIO(self.kind, OBSERVATION_DIMS, self.n_classes)

    @property
    def target_scale(self) -> float:
        return 1.0  # regret is in the reward's own units

    @abstractmethod
    def environments(
        self, batch_size: int, n_steps: int, generator: torch.Generator
    ) -> Environments:
        """``batch_size`` environments from the prior, with rewards for ``n_steps`` steps."""

    @abstractmethod
    def posterior_sample(
        self, actions: Tensor, rewards: Tensor, generator: torch.Generator
    ) -> Tensor:
        """(B, n, K): for every step i, each action's expected reward under one draw from the
        posterior given the history before i (``actions``, ``rewards`` (B, n)): what Thompson
        sampling with the true prior maximises. The draws at different steps are independent."""

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        environments = self.environments(batch_size, n_points, generator)
        if self.options.history == "dpt":
            actions = mixture_actions(batch_size, n_points, self.n_classes, generator)
            best = environments.action_values.argmax(-1)
            targets = best[:, None].expand(-1, n_points).contiguous()
        else:
            actions = self.thompson_history(environments, generator)
            targets = actions
        return Episode(
            inputs=environments.observations,
            targets=targets,
            kind=self.kind,
            meta={"action_values": environments.action_values, **environments.meta},
            actions=actions,
            rewards=environments.rewards(actions),
        )

    def thompson_history(self, environments: Environments, generator: torch.Generator) -> Tensor:
        """(B, n) actions of Thompson sampling run online in ``environments``."""
        batch, n_steps, _ = environments.reward_table.shape
        actions = torch.zeros(batch, n_steps, dtype=torch.long, device=generator.device)
        rewards = torch.zeros(batch, n_steps, device=generator.device)
        for step in range(n_steps):
            draw = self.posterior_sample(actions[:, : step + 1], rewards[:, : step + 1], generator)
            actions[:, step] = draw[:, step].argmax(-1)
            rewards[:, step] = environments.rewards(actions[:, step], step)
        return actions


def mixture_actions(
    batch_size: int, n_steps: int, n_actions: int, generator: torch.Generator
) -> Tensor:
    """(B, n) actions of DPT's bandit histories (Lee et al. 2023, ``rollin_bandit``): per
    prompt, a distribution (1 − c)·Dirichlet(1) + c·(point mass on a random arm) with c drawn
    from {0, 0.1, …, 1}, and i.i.d. actions from it, so histories range from uniform
    exploration to always pulling one (possibly bad) arm."""
    device = generator.device
    dirichlet = -torch.rand(batch_size, n_actions, generator=generator, device=device).log()
    dirichlet = dirichlet / dirichlet.sum(-1, keepdim=True)  # normalised Exp(1) = Dirichlet(1)
    point = torch.randint(n_actions, (batch_size,), generator=generator, device=device)
    weight = torch.randint(11, (batch_size, 1), generator=generator, device=device) / 10
    probabilities = (1 - weight) * dirichlet
    probabilities[torch.arange(batch_size, device=device), point] += weight[:, 0]
    return torch.multinomial(probabilities, n_steps, replacement=True, generator=generator)


def arm_statistics(actions: Tensor, rewards: Tensor, n_actions: int) -> tuple[Tensor, Tensor]:
    """Pulls and reward sums of every arm before each step: two (B, n, K) tensors whose row i
    counts steps 0..i-1 (exclusive prefix sums, all prefixes at once)."""
    chosen = torch.nn.functional.one_hot(actions, n_actions).to(rewards.dtype)
    pulls = chosen.cumsum(1) - chosen
    sums = (chosen * rewards[..., None]).cumsum(1) - chosen * rewards[..., None]
    return pulls, sums


class MultiArmedBanditOptions(BanditOptions):
    rewards: Literal["gaussian", "bernoulli"] = Field(
        "gaussian",
        description="reward distribution: gaussian (mean + noise_std·N(0, 1)) or bernoulli "
        "(1 with probability the arm's mean; noise_std unused)",
    )


@register_task("bandit")
class MultiArmedBandit(DecisionTask):
    """K-armed bandits with arm means drawn uniformly from [0, 1] (Lee et al. 2023's DPT
    setting: 5 arms, Gaussian rewards with standard deviation 0.3, horizon 500; the default
    horizon here is 50 for CPU training), Gaussian or Bernoulli rewards.

    Every observation is the constant 1 (a bandit has one state); ``meta["action_values"]``
    holds the arm means. Thompson sampling's exact posterior under the uniform prior: a normal
    truncated to [0, 1] for Gaussian rewards, Beta(1 + successes, 1 + failures) for Bernoulli.
    """

    Options = MultiArmedBanditOptions
    options: MultiArmedBanditOptions
    paper = "Lee et al. 2023 (DPT), arXiv 2306.14892; Laskin et al. 2022, arXiv 2210.14215"
    yardsticks = ("thompson", "ucb", "greedy", "optimal")

    def environments(
        self, batch_size: int, n_steps: int, generator: torch.Generator
    ) -> Environments:
        device, n_arms = generator.device, self.n_classes
        means = torch.rand(batch_size, n_arms, generator=generator, device=device)
        shape = (batch_size, n_steps, n_arms)
        if self.options.rewards == "bernoulli":
            uniform = torch.rand(shape, generator=generator, device=device)
            table = (uniform < means[:, None]).float()
        else:
            noise = torch.randn(shape, generator=generator, device=device)
            table = means[:, None] + self.options.noise_std * noise
        observations = torch.ones(batch_size, n_steps, OBSERVATION_DIMS, device=device)
        return Environments(observations, means, table)

    def posterior_sample(
        self, actions: Tensor, rewards: Tensor, generator: torch.Generator
    ) -> Tensor:
        pulls, sums = arm_statistics(actions, rewards.double(), self.n_classes)
        if self.options.rewards == "bernoulli":
            return beta_sample(1 + sums, 1 + pulls - sums, generator).float()
        # Uniform prior × Gaussian likelihood: N(mean of the pulls, σ²/pulls) cut to [0, 1];
        # with no pulls, the prior itself. Inverse-CDF sampling between the cut points.
        spread = self.options.noise_std / pulls.clamp(min=1).sqrt()
        centre = torch.where(pulls > 0, sums / pulls.clamp(min=1), 0.5)
        spread = torch.where(pulls > 0, spread, torch.inf)
        low = torch.special.ndtr((0 - centre) / spread)
        high = torch.special.ndtr((1 - centre) / spread)
        uniform = step_major_noise(pulls.shape, generator)
        quantile = (low + uniform * (high - low)).clamp(1e-300, 1 - 1e-16)
        draw = centre + spread.nan_to_num(posinf=0.0) * torch.special.ndtri(quantile)
        draw = torch.where(pulls > 0, draw, uniform)
        return draw.clamp(0, 1).float()


def step_major_noise(
    shape: tuple[int, ...], generator: torch.Generator, normal: bool = False
) -> Tensor:
    """Uniform (or, with ``normal``, standard normal) float64 numbers of shape (B, n, ...),
    drawn step by step with the batch inside: the numbers of step i of prompt b are the same
    whatever the number of steps, so a learner re-run on a growing history (an online rollout) draws
    exactly what it draws on the whole history, fresh numbers at each new step, and no two
    prompts share a draw. Normals are inverse-CDF transforms of uniforms, since ``torch.randn``
    draws depend on the size of the request."""
    batch, n_steps, *rest = shape
    noise = torch.rand(
        n_steps, batch, *rest, generator=generator, device=generator.device, dtype=torch.float64
    )
    if normal:
        noise = torch.special.ndtri(noise.clamp(min=1e-300))
    return noise.transpose(0, 1)


def beta_sample(alpha: Tensor, beta: Tensor, generator: torch.Generator) -> Tensor:
    """Beta(alpha, beta) draws from ``generator`` (torch's own Beta sampler reads only the
    global random state): the ratio of two Gamma draws, each made with the global state forked
    and seeded from ``generator``, so the result is a pure function of the generator."""
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Step-major like step_major_noise, but Gamma draws are made by rejection, so they are
        # not the same whatever the number of steps: a rollout still meets fresh ones.
        x = torch._standard_gamma(alpha.cpu().transpose(0, 1).contiguous()).transpose(0, 1)
        y = torch._standard_gamma(beta.cpu().transpose(0, 1).contiguous()).transpose(0, 1)
    return (x / (x + y)).to(alpha.device)


class LinearBanditOptions(BanditOptions):
    n_arms: int = Field(10, ge=2, le=1024, description="actions to choose from (K)")
    structure_seed: int = Field(0, description="seed of the arm features fixed for a run")


@register_task("linear_bandit")
class LinearBandit(DecisionTask):
    """Linear bandits: arm features φ_a ∈ R^d fixed for a run (drawn from ``structure_seed``,
    N(0, I/d)), a parameter θ ~ N(0, I_d) per prompt, rewards θ·φ_a + noise_std·N(0, 1).

    Lee et al. 2023 evaluate DPT on linear bandits with features shared by all tasks, as here,
    so a model can learn them in its weights while θ must be found in context. LinUCB
    (Li et al. 2010) and linear Thompson sampling (exact: the prior is Gaussian) read the
    features from the task. ``meta["theta"]`` (B, d).
    """

    Options = LinearBanditOptions
    options: LinearBanditOptions
    paper = "Lee et al. 2023 (DPT), arXiv 2306.14892"
    default_n_dims = 2
    yardsticks = ("thompson", "linucb", "optimal")

    def __init__(self, n_dims: int | None = None, options: TaskOptions | None = None) -> None:
        super().__init__(n_dims, options)
        self.check_structure_size(self.n_classes * self.n_dims, "n_arms × n_dims")
        generator = self.structure_generator(self.options.structure_seed)
        self.features = torch.randn(self.n_classes, self.n_dims, generator=generator)
        self.features /= self.n_dims**0.5

    def environments(
        self, batch_size: int, n_steps: int, generator: torch.Generator
    ) -> Environments:
        device = generator.device
        theta = torch.randn(batch_size, self.n_dims, generator=generator, device=device)
        values = theta @ self.features.to(device).T  # (B, K)
        noise = torch.randn(batch_size, n_steps, self.n_classes, generator=generator, device=device)
        table = values[:, None] + self.options.noise_std * noise
        observations = torch.ones(batch_size, n_steps, OBSERVATION_DIMS, device=device)
        return Environments(observations, values, table, {"theta": theta})

    def feature_statistics(self, actions: Tensor, rewards: Tensor) -> tuple[Tensor, Tensor]:
        """Σ φφᵀ (B, n, d, d) and Σ r·φ (B, n, d) over the pulls before each step, float64."""
        phi = self.features.to(rewards.device).double()[actions]  # (B, n, d)
        outer = phi[..., :, None] * phi[..., None, :]
        weighted = phi * rewards.double()[..., None]
        return outer.cumsum(1) - outer, weighted.cumsum(1) - weighted

    def posterior(self, actions: Tensor, rewards: Tensor) -> tuple[Tensor, Tensor]:
        """θ's Gaussian posterior before every step: means (B, n, d) and covariances
        (B, n, d, d), from the prior N(0, I) and the pulls before each step (all prefixes:
        cumulative sums of φφᵀ and rφ)."""
        gram, moment = self.feature_statistics(actions, rewards)
        variance = self.options.noise_std**2
        eye = torch.eye(self.n_dims, dtype=torch.float64, device=rewards.device)
        precision = eye + gram / variance
        covariance = torch.linalg.inv(precision)
        mean = (covariance @ (moment / variance)[..., None]).squeeze(-1)
        return mean, covariance

    def posterior_sample(
        self, actions: Tensor, rewards: Tensor, generator: torch.Generator
    ) -> Tensor:
        mean, covariance = self.posterior(actions, rewards)
        noise = step_major_noise(mean.shape, generator, normal=True)
        theta = mean + (torch.linalg.cholesky(covariance) @ noise[..., None]).squeeze(-1)
        return (theta @ self.features.to(theta.device).double().T).float()
