"""What every in-context task family provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from iclab.episode import Episode, EpisodeKind
from iclab.errors import ConfigError, within_size_limit
from iclab.kinds import TaskIO
from iclab.registry import Registry
from iclab.seeding import generator_for

# Numbers a family may draw for the structure it fixes for a run (a task pool, class centres, a
# feature map), unless ICLAB_NO_SIZE_LIMITS=1: configs are validated by building their task.
STRUCTURE_LIMIT = 1 << 24


class TaskOptions(BaseModel):
    """Options of a task family beyond ``n_dims`` and ``n_points``; subclass per family.

    Give every field a ``description``: ``iclab tasks`` shows it.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Task(ABC):
    """A family of functions plus an input distribution.

    ``sample`` is vectorised and draws everything from the given generator on the generator's
    device, so a batch is a pure function of the generator's seed. Parameters a family fixes for
    a whole run (a finite task pool, a random feature map, class centres) come from
    ``structure_generator`` instead, so they never depend on the batch stream.

    Class attributes every family sets: ``kind``, ``Options``, ``paper`` (who defined the
    setting), ``default_n_dims`` / ``default_n_points`` (the paper's sizes; ``n_points`` counts
    tokens for token tasks, which ignore ``n_dims``), and ``yardsticks`` (the algorithms it is
    evaluated against by default).
    """

    name: ClassVar[str] = "unregistered"  # set by @register_task
    kind: ClassVar[EpisodeKind]
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    paper: ClassVar[str] = ""
    default_n_dims: ClassVar[int] = 20
    default_n_points: ClassVar[int] = 41
    yardsticks: ClassVar[tuple[str, ...]] = ()
    # Inputs are real vectors drawn from a Gaussian, so scaling, rotating or projecting them
    # (the input shifts of ``iclab.evaluation.shifts``) gives inputs the function is defined on.
    continuous_inputs: ClassVar[bool] = False

    def __init__(self, n_dims: int | None = None, options: TaskOptions | None = None) -> None:
        self.n_dims = self.default_n_dims if n_dims is None else n_dims
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        """Draw ``batch_size`` prompts of ``n_points`` examples (tokens) each.

        ``n_dims_active`` (curriculum) keeps only the first coordinates of every input non-zero;
        families without vector inputs ignore it.
        """

    def label(self, inputs: Tensor, meta: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """Targets (B, n) of new inputs (B, n, d) under each prompt's function in ``meta``, with
        fresh label noise from ``generator``: distribution shifts move inputs and keep the
        function. Families whose examples are not a function of a free input (class clusters,
        token sequences) do not implement it."""
        raise NotImplementedError(f"task {self.name} cannot label new inputs")

    @property
    def n_classes(self) -> int | None:
        """Size of the prediction vector: classes (classification), vocabulary (tokens); None
        for regression, whose prediction is one number."""
        return None

    def io(self) -> TaskIO:
        """What a model needs to know of this task's examples (``iclab.models.build_model``)."""
        return TaskIO(self.kind, self.n_dims, self.n_classes)

    @property
    def target_scale(self) -> float:
        """E[y²] under the task's prior (regression): squared errors are divided by it, so the
        zero predictor scores 1 (Garg et al. 2022 divide by d for linear regression, where E[y²]
        = d, and by the sparsity for sparse linear regression)."""
        return float(self.n_dims)

    def check_structure_size(self, n_numbers: int, what: str) -> None:
        """A ``ConfigError`` naming ``what`` (``pool_size × n_dims``) before a family draws
        more than ``STRUCTURE_LIMIT`` numbers of structure: a typo in a size must not exhaust
        memory while a config is validated."""
        try:
            within_size_limit(n_numbers, STRUCTURE_LIMIT)
        except ConfigError as error:
            raise ConfigError(f"{self.name}: {what} = {n_numbers:,} {error}") from None

    def structure_generator(self, seed: int) -> torch.Generator:
        """A CPU generator for parameters fixed for a whole run, from the family and ``seed``."""
        return generator_for(seed, "structure", self.name)


def zero_inactive_dims(inputs: Tensor, n_dims_active: int | None) -> Tensor:
    """Curriculum: keep only the first ``n_dims_active`` coordinates non-zero (in place)."""
    if n_dims_active is not None and n_dims_active < inputs.shape[-1]:
        inputs[..., n_dims_active:] = 0.0
    return inputs


def standard_normal_inputs(
    batch_size: int,
    n_points: int,
    n_dims: int,
    generator: torch.Generator,
    n_dims_active: int | None,
) -> Tensor:
    """x ~ N(0, I_d) of shape (B, n, d), with the curriculum's inactive coordinates zeroed."""
    shape = (batch_size, n_points, n_dims)
    inputs = torch.randn(shape, generator=generator, device=generator.device)
    return zero_inactive_dims(inputs, n_dims_active)


TASKS: Registry[type[Task]] = Registry("task")

register_task = TASKS.register  # sets the subclass's ``name`` too


def make_task(name: str, n_dims: int | None = None, options: dict | None = None) -> Task:
    """The task family ``name`` with validated options (``n_dims`` defaults to the family's)."""
    family = TASKS.get(name)
    return family(n_dims, family.Options.model_validate(options or {}))
