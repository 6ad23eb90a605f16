"""Registry of reference learning algorithms (the yardsticks a trained model is compared with).

An algorithm is named in configs and on the command line by a spec: its registered name, with
options in parentheses when they differ from the defaults, e.g. ``knn(k=5)`` or
``gd(steps=2, lr=0.5)`` (values are parsed as YAML). The spec is also the learner's name in
tables and plots.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

from torch import Tensor

from iclab.episode import Episode
from iclab.registry import Registry
from iclab.specs import parse_spec
from iclab.tasks.base import Task


class Algorithm:
    """A classical in-context learner. Subclasses implement ``predict`` for all prefixes at once.

    ``applies_to`` lists task kinds (``regression``, ``classification``, ``tokens``) and/or task
    family names the algorithm is meaningful for. ``for_task`` builds the algorithm for a task;
    the default ignores the task, Bayes-optimal algorithms read the task's prior, noise or fixed
    structure from it. ``predict`` returns what a model returns: ``(B, n)`` values for regression,
    ``(B, n, C)`` scores (log-probabilities or any monotone version) otherwise.
    """

    name: str
    applies_to: ClassVar[tuple[str, ...]] = ("regression",)

    @classmethod
    def for_task(cls, task: Task, **options: Any) -> Algorithm:
        return cls(**options)

    @classmethod
    def applies(cls, task: Task) -> bool:
        return task.kind in cls.applies_to or task.name in cls.applies_to

    def predict(self, episode: Episode) -> Tensor:
        raise NotImplementedError


def integer_option(
    algorithm: str, option: str, value: Any, minimum: int = 1, maximum: float = math.inf
) -> int:
    """``value`` if it is an integer within bounds, else a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        allowed = f">= {minimum}" if maximum == math.inf else f"from {minimum} to {maximum}"
        raise ValueError(f"{algorithm} option {option} must be an integer {allowed}, got {value!r}")
    return value


def positive_option(algorithm: str, option: str, value: Any, allow_none: bool = False) -> Any:
    """``value`` as a float if it is finite and > 0 (or None, when allowed), else a ValueError
    naming the option."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        extra = " (or null)" if allow_none else ""
        raise ValueError(
            f"{algorithm} option {option} must be a finite number > 0{extra}, got {value!r}"
        )
    return float(value)


def reject_options(algorithm: str, options: dict[str, Any], reason: str, hint: str = "") -> None:
    """A ValueError naming the options given to an algorithm that reads ``reason`` from the
    task instead (Bayes-optimal and lookup learners)."""
    if options:
        raise ValueError(
            f"{algorithm} takes {reason} from the task, so it accepts no options; got "
            f"{', '.join(sorted(options))}" + (f" ({hint})" if hint else "")
        )


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")

register_algorithm = ALGORITHMS.register  # sets the subclass's ``name`` too


def describe_applies_to(cls: type[Algorithm]) -> str:
    return ", ".join(
        f"all {item} tasks" if item in ("regression", "classification", "tokens") else item
        for item in cls.applies_to
    )


def algorithm_options(cls: type[Algorithm]) -> str:
    """``k=3, weights='uniform'``: the constructor's options and defaults, for listings."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return ", ".join(
        f"{p.name}={p.default!r}"
        for p in parameters
        if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    )


def check_applies(spec: str, task: Task) -> type[Algorithm]:
    """The class a spec names, after checking it applies to ``task``."""
    name, _ = parse_spec(spec)
    cls = ALGORITHMS.get(name)
    if not cls.applies(task):
        raise ValueError(
            f"algorithm {name!r} applies to {describe_applies_to(cls)}, "
            f"not to task {task.name!r} ({task.kind})"
        )
    return cls


def build_algorithm(spec: str, task: Task, **options: Any) -> Algorithm:
    """The algorithm a spec names, set up for ``task``; a clear error if it does not apply or
    an option is wrong. The learner is named by the spec."""
    cls = check_applies(spec, task)
    _, spec_options = parse_spec(spec)
    try:
        algorithm = cls.for_task(task, **{**spec_options, **options})
    except TypeError as error:  # an unknown option name
        raise ValueError(
            f"algorithm {spec!r}: {error}; options are: {algorithm_options(cls) or 'none'}"
        ) from None
    algorithm.name = spec.replace(" ", "")
    return algorithm
