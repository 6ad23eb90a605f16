"""What every in-context task family provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from iclab.episode import Episode, EpisodeKind
from iclab.registry import Registry


class TaskOptions(BaseModel):
    """Options of a task family beyond ``n_dims`` and ``n_points``; subclass per family."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(ABC):
    """A family of functions plus an input distribution.

    ``sample`` is vectorised and draws everything from the given generator on the generator's
    device, so a batch is a pure function of the generator's seed.
    """

    kind: ClassVar[EpisodeKind]
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    paper: ClassVar[str] = ""

    def __init__(self, n_dims: int, options: TaskOptions | None = None) -> None:
        self.n_dims = n_dims
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        """Draw ``batch_size`` prompts of ``n_points`` examples each.

        ``n_dims_active`` (curriculum) keeps only the first coordinates of every input non-zero.
        """


TASKS: Registry[type[Task]] = Registry("task")
register_task = TASKS.register


def make_task(name: str, n_dims: int, options: dict | None = None) -> Task:
    """The task family ``name`` with validated options."""
    family = TASKS.get(name)
    return family(n_dims, family.Options.model_validate(options or {}))
