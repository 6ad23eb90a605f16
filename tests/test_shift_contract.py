"""The contract every registered shift keeps, on every registered task family, checked for all of
them at once (as ``test_task_contract.py`` does for tasks and ``test_mixers.py`` for mixers).

Shift-specific claims (the skewed spectrum, orthogonality of queries, ...) live in
``test_shifts.py``; this file makes sure a new shift cannot forget the shared rules of
``iclab.evaluation.shifts``: views of the batch's shape and dtypes, scored on disjoint positions
(one view per query for query shifts, scored at its last position only), the prompts' functions
kept when inputs move, nothing changed that the shift does not declare, determinism by seed, a
``ConfigError`` naming the shift where it does not apply, specs that round-trip, and the same
rules when composed after a prompt shift. The loops run over ``SHIFTS`` and ``TASKS``: a new
registered shift or family is covered without editing this file.
"""

from __future__ import annotations

import re
from functools import cache

import pytest
import torch
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError, UserError
from iclab.evaluation.shifts import SHIFTS, Shift, build_shift
from iclab.seeding import generator_for
from iclab.specs import Spec
from iclab.tasks import TASKS, make_task
from iclab.tasks.base import Task

SHIFT_NAMES = SHIFTS.names()
FAMILIES = TASKS.names()
BATCH = 8
# Prompts shorter than most families' defaults, and d ≤ 4: the contract, not the statistics.
SMALL_N_DIMS, SMALL_N_POINTS = 4, 8
# Shifts that move inputs relabel them with fresh label noise: the targets may be off from a
# fresh relabelling by what two fresh relabellings are off from each other (in expectation the
# same), with room for sampling error; a shift that keeps old targets for moved inputs is off by
# the function's whole variation.
NOISE_ALLOWANCE = 3.0


@cache
def small_task(name: str) -> tuple[Task, int]:
    """The family at small sizes where it allows them (a family's own constraints, e.g. prompts
    long enough for MQAR's pairs, fall back to its default sizes)."""
    family = TASKS.get(name)
    small_dims = min(SMALL_N_DIMS, family.default_n_dims)
    for n_dims, n_points in (
        (small_dims, min(SMALL_N_POINTS, family.default_n_points)),
        (small_dims, family.default_n_points),
        (family.default_n_dims, family.default_n_points),
    ):
        try:
            task = make_task(name, n_dims=n_dims)
            task.sample(1, n_points, generator_for(0, "size-check"))
        except ConfigError:
            continue
        return task, n_points
    raise AssertionError(f"task {name} samples at no size tried")


def episode_of(task: Task, n_points: int) -> Episode:
    return task.sample(BATCH, n_points, generator_for(0, "shift-contract", task.name))


def shift_views(shift: Shift, task: Task, episode: Episode, seed: int = 1) -> list[Episode]:
    return shift.views(episode, task, generator_for(seed, "shift-contract", shift.spec))


def scored(episode: Episode) -> Tensor:
    """(B, n) bool: the positions an episode scores."""
    if episode.loss_mask is not None:
        return episode.loss_mask
    return torch.ones(episode.targets.shape, dtype=torch.bool, device=episode.device)


def check_view_structure(shift: Shift, task: Task, episode: Episode, views: list[Episode]) -> None:
    """Shapes, dtypes, kind and meta of every view; disjoint scored positions within the
    episode's own; one view per query, scored at its last position only, for query shifts."""
    assert views, f"{shift.spec} made no views"
    n_points = episode.n_points
    coverage = torch.zeros(episode.targets.shape, dtype=torch.long)
    for index, view in enumerate(views):
        where = f"{shift.spec} on {task.name}, view {index}"
        length = view.n_points
        assert 1 <= length <= n_points, where
        if not shift.query_shift:
            assert length == n_points, f"{where}: a prompt shift keeps the prompt's length"
        assert view.kind == episode.kind, where
        assert view.inputs.dtype == episode.inputs.dtype, where
        assert view.targets.dtype == episode.targets.dtype, where
        assert view.inputs.shape == (BATCH, length, *episode.inputs.shape[2:]), where
        assert view.targets.shape == (BATCH, length), where
        assert view.inputs.device == view.targets.device == episode.device, where
        if view.loss_mask is not None:
            assert view.loss_mask.shape == (BATCH, length), where
            assert view.loss_mask.dtype == torch.bool, where
        assert view.meta.keys() == episode.meta.keys(), f"{where}: a shift keeps the functions"
        for key, value in episode.meta.items():
            assert torch.equal(view.meta[key], value), f"{where}: meta[{key!r}] changed"
        view_scored = scored(view)
        assert not (view_scored & ~scored(episode)[:, :length]).any(), (
            f"{where} scores positions the task does not score"
        )
        if shift.query_shift:
            assert not view_scored[:, :-1].any(), f"{where}: a query view scores its query only"
            assert view_scored[:, -1].any(), f"{where}: a query view scores its query"
        coverage[:, :length] += view_scored.long()
    assert coverage.max() <= 1, f"{shift.spec} on {task.name} scores a position in two views"
    assert coverage.sum() > 0, f"{shift.spec} on {task.name} scores nothing"


def discrepancy(first: Tensor, second: Tensor) -> Tensor:
    """Σ squared difference (regression targets) or Σ disagreements (class labels)."""
    if first.is_floating_point():
        return (first.double() - second.double()).pow(2).sum()
    return (first != second).sum().double()


def check_declared_changes(
    shift: Shift, task: Task, episode: Episode, views: list[Episode]
) -> None:
    """Inputs move only if the shift declares ``moves_inputs``, and then every target is the
    task's label of the moved inputs (up to label noise); targets change otherwise only if the
    shift declares ``regression_only`` (it changes targets)."""
    where = f"{shift.spec} on {task.name}"
    if not shift.moves_inputs:
        for view in views:
            length = view.n_points
            assert torch.equal(view.inputs, episode.inputs[:, :length]), (
                f"{where} moves inputs but does not declare moves_inputs"
            )
            if not shift.regression_only:
                assert torch.equal(view.targets, episode.targets[:, :length]), (
                    f"{where} changes targets but does not declare regression_only"
                )
        return
    off = noise = scale = torch.zeros((), dtype=torch.float64)
    for index, view in enumerate(views):
        relabelled = task.label(view.inputs, view.meta, generator_for(2, "relabel", index))
        again = task.label(view.inputs, view.meta, generator_for(3, "relabel", index))
        off = off + discrepancy(view.targets, relabelled)
        noise = noise + discrepancy(relabelled, again)
        if relabelled.is_floating_point():
            scale = scale + relabelled.double().pow(2).sum()
    rounding = 1e-10 * scale  # float32 relabelling of the same inputs in another batch shape
    assert off <= NOISE_ALLOWANCE * noise + rounding, (
        f"{where}: moved inputs' targets are not the task's labels (off by {off.item():.4g}, "
        f"label noise alone {noise.item():.4g})"
    )


def check_refusal(shift: Shift, task: Task, refused_part: Shift) -> None:
    with pytest.raises(ConfigError, match=re.escape(refused_part.spec)) as caught:
        shift.check_applies(task)
    assert isinstance(caught.value, UserError) and str(caught.value).strip()


def refusal(shift: Shift, task: Task) -> ConfigError | None:
    try:
        shift.check_applies(task)
    except ConfigError as error:
        return error
    return None


@pytest.mark.parametrize("task_name", FAMILIES)
@pytest.mark.parametrize("shift_name", SHIFT_NAMES)
def test_shift_makes_valid_views_or_refuses_by_name(shift_name, task_name):
    shift = build_shift(shift_name)
    task, n_points = small_task(task_name)
    if refusal(shift, task) is not None:
        check_refusal(shift, task, shift)
        return
    episode = episode_of(task, n_points)
    views = shift_views(shift, task, episode)
    check_view_structure(shift, task, episode, views)
    check_declared_changes(shift, task, episode, views)
    again = shift_views(shift, task, episode)
    assert len(again) == len(views)
    for view, repeat in zip(views, again, strict=True):
        assert torch.equal(view.inputs, repeat.inputs), f"{shift_name} is not deterministic"
        assert torch.equal(view.targets, repeat.targets), f"{shift_name} is not deterministic"
        assert (view.loss_mask is None) == (repeat.loss_mask is None)
        assert view.loss_mask is None or torch.equal(view.loss_mask, repeat.loss_mask)


def prompt_shift_for(task: Task) -> Shift:
    """``noisy_targets`` where it applies, else the first registered prompt shift that applies
    (so classification tasks compose too); ``noisy_targets`` if none does."""
    candidates = [build_shift("noisy_targets")] + [
        cls() for _, cls in SHIFTS if not cls.query_shift and cls.name != "noisy_targets"
    ]
    applying = [shift for shift in candidates if refusal(shift, task) is None]
    return applying[0] if applying else candidates[0]


@pytest.mark.parametrize("task_name", FAMILIES)
@pytest.mark.parametrize("shift_name", SHIFT_NAMES)
def test_shift_composed_after_a_prompt_shift_keeps_the_contract(shift_name, task_name):
    task, n_points = small_task(task_name)
    first, last = prompt_shift_for(task), build_shift(shift_name)
    composed = build_shift(f"{first.spec}+{last.spec}")
    assert composed.spec == f"{first.spec}+{shift_name}"
    assert composed.query_shift == last.query_shift
    refused = [part for part in (first, last) if refusal(part, task) is not None]
    if refused:
        check_refusal(composed, task, refused[0])
        return
    episode = episode_of(task, n_points)
    views = shift_views(composed, task, episode)
    check_view_structure(composed, task, episode, views)
    again = shift_views(composed, task, episode)
    for view, repeat in zip(views, again, strict=True):
        assert torch.equal(view.inputs, repeat.inputs) and torch.equal(view.targets, repeat.targets)


@pytest.mark.parametrize("name", SHIFT_NAMES)
def test_every_shift_builds_by_name_and_its_specs_round_trip(name):
    cls = SHIFTS.get(name)
    shift = build_shift(name)  # every option has a default
    assert type(shift) is cls and shift.spec == name
    assert build_shift(shift.spec).spec == shift.spec
    fields = cls.Options.model_fields
    for field, info in fields.items():
        assert info.description, f"{name} option {field} has no description"
    every = cls.Options(**{field: info.default for field, info in fields.items()})
    written = cls(every).spec  # every option given: all written, as for any spec
    assert written == str(Spec(cls, every))
    assert written == name or written.startswith(f"{name}(")
    rebuilt = build_shift(written)
    assert rebuilt.spec == written and rebuilt.options == every
    assert cls.__doc__ and cls.__doc__.strip()


@pytest.mark.parametrize("name", [name for name in SHIFT_NAMES if SHIFTS.get(name).query_shift])
def test_a_query_shift_cannot_come_first_in_a_composition(name):
    with pytest.raises(ConfigError, match=f"{name} gives one prompt per query"):
        build_shift(f"{name}+noisy_targets")
