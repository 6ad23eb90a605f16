"""Distribution shifts: prompts unlike the training prompts, as Garg et al. 2022 (arXiv
2208.01066, section 5 and their ``eval.py``) test in-context learners with.

A shift turns a batch of training-distribution prompts into *views*: episodes whose scored
positions do not overlap, so that the curve at prefix length k still gathers one score per
prompt. A *prompt shift* changes every example alike (one view). A *query shift* draws the query
from another distribution than its context; a causal learner sees each query only through its
own prompt, so there is one view per scored position j: the shifted context x_1..x_{j-1} and
the query at j, scored there only (Garg et al. evaluate these the same way).

Shifts that move inputs keep each prompt's function: the task relabels the new inputs
(``Task.label``). Named on the command line and in ``eval.shifts`` by specs such as
``scale_inputs(factor=2)``; ``all`` is ``STANDARD_SHIFTS``. Every option has a default, so a
shift's name alone is a spec; a shift's canonical text (``Shift.spec``) is the name and the
options given, as for every spec (``iclab.specs``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.registry import Registry
from iclab.specs import Spec, resolve_spec, split_specs
from iclab.tasks.base import Task
from iclab.tasks.regression import random_rotations


class ShiftOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Shift(ABC):
    """One kind of distribution shift; subclasses set the requirements and build the views."""

    name: ClassVar[str] = "unregistered"  # set by @register_shift
    Options: ClassVar[type[ShiftOptions]] = ShiftOptions
    regression_only: ClassVar[bool] = False  # changes targets, which only regression has
    moves_inputs: ClassVar[bool] = False  # needs Task.label
    needs_continuous_inputs: ClassVar[bool] = False  # scales or rotates inputs
    query_shift: ClassVar[bool] = False  # one view per query position (see the module doc)

    def __init__(self, options: ShiftOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @property
    def spec(self) -> str:
        """The canonical spec, its name in tables, plots and shift random streams: the name and
        the options given, as every spec is written (``iclab.specs.Spec``), so
        ``scale_inputs(factor=2)`` keeps its name."""
        return str(Spec(type(self), self.options))

    def check_applies(self, task: Task) -> None:
        """A ``ConfigError`` naming the shift and why it cannot be applied to ``task``, if it
        cannot."""
        if self.regression_only and task.kind != "regression":
            raise ConfigError(f"shift {self.spec} changes targets: regression tasks only")
        if self.needs_continuous_inputs and not task.continuous_inputs:
            raise ConfigError(f"shift {self.spec} needs real-valued Gaussian inputs")
        if self.moves_inputs and type(task).label is Task.label:
            raise ConfigError(f"shift {self.spec} needs a task that can label new inputs")

    @abstractmethod
    def views(self, episode: Episode, task: Task, generator: torch.Generator) -> list[Episode]:
        """The shifted episodes of a batch, scored on disjoint positions (see the module doc)."""


SHIFTS: Registry[type[Shift]] = Registry("shift", keywords=["all"])  # the standard set
register_shift = SHIFTS.register


def relabelled(episode: Episode, inputs: Tensor, task: Task, generator: torch.Generator) -> Episode:
    """The episode with new inputs and the targets each prompt's function gives them."""
    targets = task.label(inputs, episode.meta, generator)
    return replace(episode, inputs=inputs, targets=targets)


def query_views(context: Episode, queries: Episode, positions: range | list[int]) -> list[Episode]:
    """One view per position j: ``context``'s first j examples, then ``queries``' example j,
    scored at j only."""
    views = []
    for j in positions:
        inputs = torch.cat([context.inputs[:, :j], queries.inputs[:, j : j + 1]], dim=1)
        targets = torch.cat([context.targets[:, :j], queries.targets[:, j : j + 1]], dim=1)
        mask = torch.zeros(targets.shape, dtype=torch.bool, device=targets.device)
        mask[:, j] = True
        views.append(Episode(inputs, targets, context.kind, context.meta, mask))
    return views


def spectrum_transform(eigenvalues: Tensor, generator: torch.Generator, batch_size: int) -> Tensor:
    """(B, d, d) symmetric ``Q diag(√λ) Qᵀ``, one random eigenbasis Q per prompt, λ scaled to
    trace d: x ~ N(0, I) becomes x T ~ N(0, Q diag(λ) Qᵀ) with E‖x T‖² = d as before."""
    n_dims = eigenvalues.shape[0]
    scaled = eigenvalues.to(generator.device) * n_dims / eigenvalues.sum()
    rotations = random_rotations(batch_size, n_dims, generator)
    return (rotations * scaled.sqrt()) @ rotations.transpose(1, 2)


class SpectrumShift(Shift):
    """Inputs multiplied by a random symmetric matrix with a given spectrum, per prompt."""

    moves_inputs = True
    needs_continuous_inputs = True

    @abstractmethod
    def eigenvalues(self, n_dims: int) -> Tensor:
        """Eigenvalues of the inputs' covariance, before scaling to trace d."""

    def views(self, episode, task, generator):
        transform = spectrum_transform(
            self.eigenvalues(episode.n_dims), generator, episode.batch_size
        )
        return [relabelled(episode, episode.inputs @ transform, task, generator)]


class SkewedCovarianceOptions(ShiftOptions):
    decay: float = Field(2.0, gt=0.0, description="eigenvalues of Cov(x) ∝ i^-decay")


@register_shift("skewed_covariance")
class SkewedCovariance(SpectrumShift):
    """Inputs x ~ N(0, Σ), eigenvalues of Σ ∝ 1/i², trace d, a random eigenbasis per prompt."""

    Options = SkewedCovarianceOptions
    options: SkewedCovarianceOptions

    def eigenvalues(self, n_dims):
        return torch.arange(1, n_dims + 1, dtype=torch.float32).pow(-self.options.decay)


@register_shift("half_subspace")
class HalfSubspace(SpectrumShift):
    """Every input (context and query) in a random d/2-dimensional subspace per prompt, scaled
    so E‖x‖² = d: about d/2 examples determine a linear function there."""

    def eigenvalues(self, n_dims):
        return (torch.arange(n_dims) < max(n_dims // 2, 1)).float()


class ScaleOptions(ShiftOptions):
    """A default like every shift's options, so each registered shift is built by its name
    alone (``scale_inputs`` is ``scale_inputs(factor=2)`` under another name)."""

    factor: float = Field(2.0, gt=0.0, description="multiplier")


@register_shift("scale_inputs")
class ScaleInputs(Shift):
    """Every input multiplied by ``factor`` (default 2; Garg et al. use 1/3, 1/2, 2 and 3)."""

    Options = ScaleOptions
    options: ScaleOptions
    moves_inputs = True
    needs_continuous_inputs = True

    def views(self, episode, task, generator):
        return [relabelled(episode, episode.inputs * self.options.factor, task, generator)]


@register_shift("scale_targets")
class ScaleTargets(Shift):
    """Every target multiplied by ``factor`` (default 2): the function scaled, inputs
    unchanged."""

    Options = ScaleOptions
    options: ScaleOptions
    regression_only = True

    def views(self, episode, task, generator):
        targets = episode.targets * self.options.factor
        return [replace(episode, targets=targets)]


class NoisyTargetsOptions(ShiftOptions):
    std: float = Field(1.0, gt=0.0, description="std of the Gaussian noise added to y")


@register_shift("noisy_targets")
class NoisyTargets(Shift):
    """Gaussian noise on every target, the query's included (Garg et al.'s noisy y, std 1)."""

    Options = NoisyTargetsOptions
    options: NoisyTargetsOptions
    regression_only = True

    def views(self, episode, task, generator):
        noise = torch.randn(episode.targets.shape, generator=generator, device=generator.device)
        targets = episode.targets + self.options.std * noise
        return [replace(episode, targets=targets)]


@register_shift("random_orthant")
class RandomOrthant(Shift):
    """Context inputs in one random orthant per prompt (x ← s ⊙ |x|), the query from the
    training distribution: the context covers one 2^-d-th of the input space."""

    moves_inputs = True
    query_shift = True
    needs_continuous_inputs = True

    def views(self, episode, task, generator):
        shape = (episode.batch_size, 1, episode.n_dims)
        signs = torch.randint(0, 2, shape, generator=generator, device=generator.device) * 2 - 1
        context = relabelled(episode, episode.inputs.abs() * signs, task, generator)
        return query_views(context, episode, range(episode.n_points))


@register_shift("orthogonal_query")
class OrthogonalQuery(Shift):
    """The query orthogonal to every context input, with its norm kept: nothing in the
    context says anything about w·x_query for a linear function. Defined while the context
    spans less than the whole space, so scored for k < d."""

    moves_inputs = True
    query_shift = True
    needs_continuous_inputs = True

    def views(self, episode, task, generator):
        inputs = episode.inputs
        queries = torch.empty_like(inputs)
        for j in range(min(episode.n_points, episode.n_dims)):
            query = inputs[:, j]  # (B, d)
            if j > 0:
                basis, _ = torch.linalg.qr(inputs[:, :j].transpose(1, 2))  # (B, d, j)
                along_context = basis @ (basis.transpose(1, 2) @ query[..., None])  # (B, d, 1)
                orthogonal = query - along_context[..., 0]
                query = orthogonal * (query.norm(dim=-1) / orthogonal.norm(dim=-1))[:, None]
            queries[:, j] = query
        queries = relabelled(episode, queries, task, generator)
        return query_views(episode, queries, range(min(episode.n_points, episode.n_dims)))


@register_shift("query_in_context")
class QueryInContext(Shift):
    """The query is a copy of a random earlier context input (its target relabelled): a
    learner that memorises its context answers it exactly."""

    moves_inputs = True
    query_shift = True

    def views(self, episode, task, generator):
        batch, n_points = episode.batch_size, episode.n_points
        draws = torch.rand(batch, n_points, generator=generator, device=generator.device)
        earlier = (draws * torch.arange(n_points, device=draws.device)).long()  # j' < j
        rows = torch.arange(batch, device=draws.device)[:, None]
        queries = relabelled(episode, episode.inputs[rows, earlier], task, generator)
        return query_views(episode, queries, range(1, n_points))


STANDARD_SHIFTS = (
    "skewed_covariance",
    "noisy_targets",
    "scale_inputs(factor=0.5)",
    "scale_inputs(factor=2)",
    "scale_inputs(factor=3)",
    "scale_targets(factor=0.5)",
    "scale_targets(factor=3)",
    "random_orthant",
    "orthogonal_query",
    "query_in_context",
    "half_subspace",
)


class ComposedShift(Shift):
    """Shifts applied in turn, named ``a+b`` (e.g. ``skewed_covariance+noisy_targets``): each
    applies to the prompts the previous one made; only the last may be a query shift."""

    name = "composed"

    def __init__(self, parts: list[Shift]) -> None:
        super().__init__()
        self.parts = parts
        self.query_shift = parts[-1].query_shift
        for part in parts[:-1]:
            if part.query_shift:
                raise ConfigError(
                    f"shift {self.spec}: {part.spec} gives one prompt per query, so it can only "
                    "come last"
                )

    @property
    def spec(self) -> str:
        return "+".join(part.spec for part in self.parts)

    def check_applies(self, task):
        for part in self.parts:
            part.check_applies(task)

    def views(self, episode, task, generator):
        for part in self.parts[:-1]:
            [episode] = part.views(episode, task, generator)
        return self.parts[-1].views(episode, task, generator)


def build_shift(spec: str | Spec) -> Shift:
    """The shift a spec names, with validated options (``a+b`` composes two); a clear error
    otherwise."""
    parts = split_specs(spec, separator="+") if isinstance(spec, str) else [spec]
    if len(parts) > 1:
        return ComposedShift([build_shift(part) for part in parts])
    cls, options = resolve_spec(spec, SHIFTS, what="shift")
    return cls(options)


def resolve_shifts(specs: str | list[str], task: Task) -> tuple[list[Shift], list[str]]:
    """The shifts named by ``specs`` (a list, or text with commas; ``all`` for the standard set),
    and for ``all`` the reasons the standard shifts that do not apply to ``task`` were left out.
    A shift named explicitly that does not apply is an error."""
    items = split_specs(specs) if isinstance(specs, str) else list(specs)
    shifts, skipped = [], []
    for item in items:
        if item == "all":
            for spec in STANDARD_SHIFTS:
                shift = build_shift(spec)
                try:
                    shift.check_applies(task)
                except ValueError as reason:
                    skipped.append(str(reason))
                    continue
                shifts.append(shift)
            continue
        shift = build_shift(item)
        try:
            shift.check_applies(task)
        except ValueError as reason:
            raise ConfigError(f"{reason}; task {task.name} is {task.kind}") from None
        shifts.append(shift)
    unique = {shift.spec: shift for shift in shifts}
    return list(unique.values()), skipped
