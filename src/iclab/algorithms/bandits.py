"""Bandit algorithms: the yardsticks of in-context decision making.

Each answers a decision episode with a (B, n, K) score per action at every step, computed from
the actions and rewards before that step for all steps at once (prefix sums); its choice is the
top-scoring action (``iclab.kinds.decisions``). Ties are broken uniformly at random, and the
randomised algorithms (Thompson sampling, ε-greedy) draw from a generator seeded by their
``seed`` option at every call, step-major (``step_major_noise``): the same history gets the same
answer, and an online rollout, which re-runs the algorithm on a growing history, meets fresh
randomness at each step. Online, an algorithm plays its top-scoring action
(``iclab.evaluation.rollouts``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from iclab.algorithms.base import Algorithm, AlgorithmOptions, register_algorithm
from iclab.episode import Episode
from iclab.seeding import generator_for
from iclab.tasks.bandits import DecisionTask, LinearBandit, arm_statistics, step_major_noise

UNTRIED = 1e6  # the score of an arm never pulled, for algorithms that try every arm first
TIE_JITTER = 1e-6  # random tie-breaking: far below any difference of means that matters


class SeededOptions(AlgorithmOptions):
    seed: int = Field(0, description="seed of the algorithm's random choices (and tie-breaks)")


class BanditAlgorithm(Algorithm):
    """Shared by the bandit yardsticks: the task, the per-arm statistics, the tie-breaks."""

    applies_to = ("decisions",)
    Options = SeededOptions
    options: SeededOptions
    task: DecisionTask

    def __init__(self, task: DecisionTask, options: SeededOptions | None = None) -> None:
        super().__init__(task, options)
        self.task = task

    def generator(self, episode: Episode, use: str) -> torch.Generator:
        """The same at every call, one per ``use`` (each makes one step-major draw, so it is
        the same whatever the number of steps); seeded apart from any task's stream (a
        generator seeded like the prompts' would draw the arm means again as its tie-breaks)."""
        name = type(self).name
        return generator_for(self.options.seed, "algorithm", name, use, device=episode.device)

    def statistics(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Pulls and empirical means of every arm before each step, (B, n, K) float64."""
        pulls, sums = arm_statistics(episode.actions, episode.rewards.double(), self.task.n_classes)
        return pulls, sums / pulls.clamp(min=1)

    def predict(self, episode: Episode) -> Tensor:
        scores = self.scores(episode, self.generator(episode, "choices")).double()
        shape = (*episode.targets.shape, self.task.n_classes)
        jitter = step_major_noise(shape, self.generator(episode, "ties"))
        return scores + TIE_JITTER * jitter  # float64: float32 would round the jitter away

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        """(B, n, K) scores before tie-breaking; the top one is the algorithm's choice."""
        raise NotImplementedError


def untried_first(scores: Tensor, pulls: Tensor) -> Tensor:
    """Arms never pulled score above all others: every arm is tried once, in random order."""
    return torch.where(pulls > 0, scores, UNTRIED)


@register_algorithm("optimal")
class Optimal(BanditAlgorithm):
    """The optimal policy: the action with the best expected reward, read from the prompt's
    drawn parameters (an oracle; regret 0 by definition)."""

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        values = episode.meta["action_values"]
        return values[:, None].expand(*episode.targets.shape, -1)


@register_algorithm("greedy")
class Greedy(BanditAlgorithm):
    """Every arm once, then the best empirical mean (DPT's "Emp" baseline online)."""

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        pulls, means = self.statistics(episode)
        return untried_first(means, pulls)


class EpsilonGreedyOptions(SeededOptions):
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="probability of a uniform action")


@register_algorithm("epsilon_greedy")
class EpsilonGreedy(BanditAlgorithm):
    """With probability ε a uniformly random arm, else greedy (every arm once, then the best
    empirical mean)."""

    Options = EpsilonGreedyOptions
    options: EpsilonGreedyOptions

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        pulls, means = self.statistics(episode)
        greedy = untried_first(means, pulls)
        batch, n_steps, n_arms = greedy.shape  # one draw: whether to explore, and a random arm
        draw = step_major_noise((batch, n_steps, n_arms + 1), generator)
        explore = draw[..., :1] < self.options.epsilon
        return torch.where(explore, draw[..., 1:], greedy)


class ConfidenceOptions(SeededOptions):
    c: float = Field(1.0, ge=0.0, description="width of the confidence bonus")


@register_algorithm("ucb")
class UCB1(BanditAlgorithm):
    """UCB1 (Auer, Cesa-Bianchi, Fischer 2002): every arm once, then the arm maximising
    mean + c·sqrt(2 ln t / pulls), t the steps so far."""

    Options = ConfidenceOptions
    options: ConfidenceOptions

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        pulls, means = self.statistics(episode)
        steps = pulls.sum(-1, keepdim=True).clamp(min=1)
        bonus = self.options.c * (2 * steps.log() / pulls.clamp(min=1)).sqrt()
        return untried_first(means + bonus, pulls)


class LowerConfidenceOptions(SeededOptions):
    c: float = Field(0.8, ge=0.0, description="width of the confidence penalty")


@register_algorithm("lcb")
class LCB(BanditAlgorithm):
    """Pessimism for the offline setting (DPT's "LCB"): the arm maximising
    mean − c / sqrt(max(pulls, 1)), an arm never pulled counting as mean 0. It picks an arm the
    history has shown to be good, not one it knows little about."""

    Options = LowerConfidenceOptions
    options: LowerConfidenceOptions

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        pulls, means = self.statistics(episode)
        return means - self.options.c / pulls.clamp(min=1).sqrt()


@register_algorithm("thompson")
class ThompsonSampling(BanditAlgorithm):
    """Thompson sampling with the task's true prior (Thompson 1933; Russo et al. 2018): the
    action that is best under one draw from the exact posterior, which the task gives
    (``posterior_sample``: a truncated normal or a Beta per arm for K-armed bandits, a Gaussian
    over θ for linear bandits)."""

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        return self.task.posterior_sample(episode.actions, episode.rewards, generator)


class LinUCBOptions(SeededOptions):
    alpha: float = Field(1.0, ge=0.0, description="width of the confidence bonus")
    ridge: float = Field(1.0, gt=0.0, description="ridge penalty λ of the estimate of θ")


@register_algorithm("linucb")
class LinUCB(BanditAlgorithm):
    """LinUCB (Li, Chu, Langford, Schapire 2010): θ̂ = (λI + Σφφᵀ)⁻¹ Σ r·φ over the pulls so
    far, then the arm maximising φ·θ̂ + α·sqrt(φᵀ(λI + Σφφᵀ)⁻¹φ); the arm features are the
    task's."""

    applies_to = ("linear_bandit",)
    Options = LinUCBOptions
    options: LinUCBOptions
    task: LinearBandit

    def scores(self, episode: Episode, generator: torch.Generator) -> Tensor:
        gram, moment = self.task.feature_statistics(episode.actions, episode.rewards)
        eye = torch.eye(self.task.n_dims, dtype=gram.dtype, device=gram.device)
        inverse = torch.linalg.inv(self.options.ridge * eye + gram)
        theta = (inverse @ moment[..., None]).squeeze(-1)  # (B, n, d)
        features = self.task.features.to(gram.device, gram.dtype)  # (K, d)
        spread = torch.einsum("kd,bnde,ke->bnk", features, inverse, features)
        return theta @ features.T + self.options.alpha * spread.clamp(min=0).sqrt()
