"""Learning rate and curriculum as pure functions of the step (nothing to save or restore)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from iclab.config import RunConfig, TrainConfig


def learning_rate(train: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then constant or cosine decay to ``min_lr_ratio · lr`` over
    ``decay_steps`` (default ``steps``), then the floor."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return train.lr
    horizon = train.decay_steps or train.steps
    progress = (step - train.warmup_steps) / max(1, horizon - train.warmup_steps)
    floor = train.min_lr_ratio * train.lr
    return floor + (train.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class CurriculumState:
    n_dims_active: int
    n_points: int


def curriculum_at(config: RunConfig, step: int) -> CurriculumState:
    """Garg et al. 2022: active dimensions and prompt length grow in steps during training."""
    curriculum = config.train.curriculum
    dims, points = curriculum.dims, curriculum.points
    return CurriculumState(
        n_dims_active=dims.value_at(step) if dims else config.task.n_dims,
        n_points=points.value_at(step) if points else config.task.n_points,
    )


def curriculum_complete(config: RunConfig, step: int) -> bool:
    """Whether step ``step`` (0-based) trains on the task's full size (every dimension active,
    every point)."""
    stage = curriculum_at(config, step)
    return (stage.n_dims_active, stage.n_points) == (config.task.n_dims, config.task.n_points)


def schedule_jump(before: TrainConfig, after: TrainConfig, step: int) -> str | None:
    """What resuming at ``step`` with ``after`` instead of ``before`` does to the learning rate,
    when it changes it: e.g. more steps re-stretch a cosine schedule and the rate jumps up."""
    old, new = learning_rate(before, step), learning_rate(after, step)
    if math.isclose(old, new, rel_tol=1e-3):
        return None
    advice = ""
    if after.schedule == "cosine" and after.decay_steps is None and before.steps != after.steps:
        horizon = before.decay_steps or before.steps
        advice = (
            f"; to keep the schedule and train on at its floor, add "
            f"--set train.decay_steps={horizon}"
        )
    return (
        f"resuming at step {step} with the new train section moves the learning rate from "
        f"{old:.3g} to {new:.3g}{advice}"
    )


def curriculum_shortfall(config: RunConfig) -> str | None:
    """A warning when the curriculum does not reach the task's full size by the last step, so
    the model never trains on the prompts it is evaluated on."""
    if curriculum_complete(config, config.train.steps - 1):
        return None
    last, task = curriculum_at(config, config.train.steps - 1), config.task
    needed = max(
        (ramp.interval * -(-(ramp.end - ramp.start) // ramp.increment))
        for ramp in (config.train.curriculum.dims, config.train.curriculum.points)
        if ramp is not None
    )
    return (
        f"the curriculum reaches d={last.n_dims_active}, n_points={last.n_points} by the last "
        f"step ({config.train.steps}), short of the task's d={task.n_dims}, "
        f"n_points={task.n_points} that evaluation uses; it needs {needed + 1} steps (or "
        "shorter train.curriculum.*.interval)"
    )
