"""Registry of reference learning algorithms (the yardsticks a trained model is compared with).

An algorithm is named in configs and on the command line by a spec: its registered name, with
the options chosen in parentheses, e.g. ``knn(k=5)`` or
``gd(steps=2, lr=0.5)`` (values are parsed as YAML and validated by the algorithm's pydantic
``Options``). The spec is also the learner's name in tables and plots.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.registry import Registry
from iclab.specs import Spec, resolve_spec, spec_type
from iclab.tasks.base import Task


class AlgorithmOptions(BaseModel):
    """What a user may choose about an algorithm; subclass per algorithm and give every field a
    default, its allowed range and a ``description`` (``iclab algorithms`` shows it).

    What the algorithm reads from the task (class count, vocabulary, noise, prior, task pool) is
    never an option, so a spec cannot contradict the task it is evaluated on.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Algorithm:
    """A classical in-context learner. Subclasses implement ``predict`` for all prefixes at once.

    Built for one task: ``__init__`` checks that the algorithm applies to it, stores the
    validated ``options``, and (in subclasses) reads what the algorithm needs from the task,
    so that every error shows when the algorithm is built, never halfway through an
    evaluation. ``applies_to`` lists task kinds (``regression``, ``classification``,
    ``tokens``) and/or task family names the algorithm is meaningful for. ``predict`` returns
    what a model returns: ``(B, n)`` values for regression, ``(B, n, C)`` scores
    (log-probabilities or any monotone version) otherwise.
    """

    name: str  # the registered name; ``build_algorithm`` sets the instance's to its spec
    Options: ClassVar[type[AlgorithmOptions]] = AlgorithmOptions
    applies_to: ClassVar[tuple[str, ...]] = ("regression",)

    def __init__(self, task: Task, options: AlgorithmOptions | None = None) -> None:
        self.check_applies(task)
        if options is not None and not isinstance(options, self.Options):
            raise TypeError(
                f"{self.name} takes {self.Options.__name__}, not {type(options).__name__}"
            )
        self.options = options if options is not None else self.Options()

    @classmethod
    def applies(cls, task: Task) -> bool:
        return task.kind in cls.applies_to or task.name in cls.applies_to

    @classmethod
    def check_applies(cls, task: Task) -> None:
        """A ``ConfigError`` naming the tasks the algorithm is for, unless it applies to
        ``task``."""
        if not cls.applies(task):
            raise ConfigError(
                f"algorithm {cls.name!r} applies to {describe_applies_to(cls)}, "
                f"not to task {task.name!r} ({task.kind})"
            )

    def predict(self, episode: Episode) -> Tensor:
        raise NotImplementedError


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")

register_algorithm = ALGORITHMS.register  # sets the subclass's ``name`` too

# The pydantic field type of an algorithm spec in configs: validated from text, written back
# as its canonical text.
ALGORITHM_SPEC = spec_type(ALGORITHMS, "algorithm")


def describe_applies_to(cls: type[Algorithm]) -> str:
    return ", ".join(
        f"all {item} tasks" if item in ("regression", "classification", "tokens") else item
        for item in cls.applies_to
    )


def check_applies(spec: str | Spec, task: Task) -> Spec:
    """The spec resolved (its options validated), after checking that its algorithm applies to
    ``task``; a ``ConfigError`` otherwise."""
    spec = resolve_spec(spec, ALGORITHMS, "algorithm")
    spec.cls.check_applies(task)
    return spec


def build_algorithm(spec: str | Spec, task: Task) -> Algorithm:
    """The algorithm a spec names, built for ``task`` and named by the spec's canonical text;
    a ``ConfigError`` if it does not apply or an option is wrong."""
    spec = resolve_spec(spec, ALGORITHMS, "algorithm")
    algorithm = spec.cls(task, spec.options)  # which checks that it applies
    algorithm.name = str(spec)
    return algorithm
