"""Registry of reference learning algorithms (the yardsticks a trained model is compared with)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from iclab.episode import Episode, EpisodeKind
from iclab.registry import Registry
from iclab.tasks.base import Task


class Algorithm:
    """A classical in-context learner. Subclasses implement ``predict`` for all prefixes at once.

    ``for_task`` builds the algorithm for a task; the default ignores the task, Bayes-optimal
    algorithms read the task's prior and noise from it.
    """

    name: str
    kinds: ClassVar[tuple[EpisodeKind, ...]] = ("regression",)

    @classmethod
    def for_task(cls, task: Task, **options: Any) -> Algorithm:
        return cls(**options)

    def predict(self, episode: Episode) -> Tensor:
        raise NotImplementedError


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")


def register_algorithm(name: str):
    """Register an ``Algorithm`` subclass under ``name`` (also its ``name`` attribute)."""

    def decorate(cls: type[Algorithm]) -> type[Algorithm]:
        cls.name = name
        return ALGORITHMS.register(name)(cls)

    return decorate


def build_algorithm(name: str, task: Task, **options: Any) -> Algorithm:
    """The algorithm ``name`` set up for ``task``; a clear error if it does not apply."""
    cls = ALGORITHMS.get(name)
    if task.kind not in cls.kinds:
        raise ValueError(
            f"algorithm {name!r} applies to {'/'.join(cls.kinds)} tasks, "
            f"not to {type(task).__name__} ({task.kind})"
        )
    return cls.for_task(task, **options)
