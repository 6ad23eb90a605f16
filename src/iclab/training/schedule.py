"""Learning rate and curriculum as pure functions of the step (nothing to save or restore)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from iclab.config import RunConfig, TrainConfig


def learning_rate(train: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then constant or cosine decay to ``min_lr_ratio · lr``."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return train.lr
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
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
