"""Online evaluation of decision learners: the learner acts, the environment answers, the
history grows, step by step.

A trained model acts through its streaming path (``Backbone.step``: a KV cache for attention,
the fixed state of recurrent mixers), so a long horizon costs one token per observation and one
per feedback, never a pass over the whole history; an algorithm is re-run on the growing
history (its prefix sums make each call cheap). As in Lee et al. 2023, a model samples its
action from the softmax of its scores and an algorithm plays its top-scoring action. All
learners meet the same environments and, through ``Environments.reward_table``, the same reward
noise for the same action at the same step (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from iclab.episode import Episode
from iclab.kinds.decisions import regret
from iclab.learner import InContextLearner
from iclab.models import InContextModel
from iclab.seeding import generator_for
from iclab.tasks.bandits import DecisionTask, Environments


@dataclass(frozen=True)
class Rollout:
    """What a learner did online: its action and reward at every step (B, n), and the scores
    it acted on (B, n, K)."""

    actions: Tensor
    rewards: Tensor
    scores: Tensor

    def regret(self, environments: Environments) -> Tensor:
        """(B, n) expected regret of every step's action."""
        return regret(self.actions, environments.action_values)

    def episode(self, environments: Environments) -> Episode:
        """The history as a decision episode (targets: the actions taken)."""
        return history(environments, self.actions, self.rewards)


def history(environments: Environments, actions: Tensor, rewards: Tensor) -> Episode:
    """Actions taken and rewards earned (B, n) in ``environments`` as a decision episode, the
    actions as its targets."""
    return Episode(
        inputs=environments.observations,
        targets=actions,
        kind="decisions",
        meta={"action_values": environments.action_values, **environments.meta},
        actions=actions,
        rewards=rewards,
    )


@torch.no_grad()
def roll_out(
    learner: InContextLearner,
    environments: Environments,
    generator: torch.Generator,
    sample: bool | None = None,
) -> Rollout:
    """``learner`` acting for every step of ``environments``. ``sample``: draw each action
    from the softmax of the scores (default for models) instead of taking the top one
    (default for algorithms); ``generator`` draws the samples."""
    is_model = isinstance(learner, InContextModel)
    sample = is_model if sample is None else sample
    if is_model:
        return _roll_out_model(learner, environments, generator, sample)
    batch, n_steps, _ = environments.reward_table.shape
    device = environments.reward_table.device
    actions = torch.zeros(batch, n_steps, dtype=torch.long, device=device)
    rewards = torch.zeros(batch, n_steps, device=device)
    so_far = history(environments, actions, rewards)  # views: filled in step by step
    scores = []
    for step in range(n_steps):
        scores.append(learner.predict(so_far.prefix(step + 1))[:, step])
        actions[:, step] = choose(scores[-1], generator, sample)
        rewards[:, step] = environments.rewards(actions[:, step], step)
    return Rollout(actions, rewards, torch.stack(scores, 1))


def _roll_out_model(
    model: InContextModel, environments: Environments, generator: torch.Generator, sample: bool
) -> Rollout:
    """A model acting token by token: its observation token gives the scores of the step, its
    action and reward go in as the feedback token."""
    observations = environments.observations
    batch, n_steps, _ = environments.reward_table.shape
    model.check_points(n_steps)
    was_training = model.training
    model.eval()
    try:
        codec, backbone = model.codec, model.backbone
        states = backbone.initial_states(batch, observations.device, observations.dtype)
        actions, rewards, scores = [], [], []
        for step in range(n_steps):
            token = codec.observation_tokens(observations[:, step])
            hidden, states = backbone.step(token, states, 2 * step)
            scores.append(codec.read_out(hidden))
            actions.append(choose(scores[-1], generator, sample))
            rewards.append(environments.rewards(actions[-1], step))
            feedback = codec.feedback_tokens(actions[-1], rewards[-1])
            _, states = backbone.step(feedback, states, 2 * step + 1)
    finally:
        model.train(was_training)
    return Rollout(torch.stack(actions, 1), torch.stack(rewards, 1), torch.stack(scores, 1))


def choose(scores: Tensor, generator: torch.Generator, sample: bool) -> Tensor:
    """(B,) actions from (B, K) scores: a draw from their softmax, or the top one."""
    if not sample:
        return scores.argmax(-1)
    probabilities = torch.softmax(scores.float(), dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


def online_regrets(
    learners: list[InContextLearner],
    task: DecisionTask,
    n_steps: int,
    batch_size: int,
    seed: int,
    batch: int,
    device: torch.device | str = "cpu",
) -> dict[str, tuple[Tensor, Tensor]]:
    """Every learner acting online in batch ``batch`` of the ``(seed, "online")`` stream of
    environments: per learner name, the cumulative regret and the share of suboptimal pulls so
    far, (B, n) float64 on the CPU each. A model's action draws come from its own stream."""
    environments = task.environments(
        batch_size, n_steps, generator_for(seed, "online", batch, device=device)
    )
    best = environments.action_values.argmax(-1, keepdim=True)
    steps = torch.arange(1, n_steps + 1, dtype=torch.float64)
    results = {}
    for learner in learners:
        generator = generator_for(seed, "online-actions", learner.name, batch, device=device)
        rollout = roll_out(learner, environments, generator)
        regrets = rollout.regret(environments).double().cpu().cumsum(1)
        suboptimal = (rollout.actions != best).double().cpu().cumsum(1) / steps
        results[learner.name] = (regrets, suboptimal)
    return results
