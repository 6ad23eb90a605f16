"""The contract every registered algorithm keeps on every task family it applies to.

Each pair (algorithm, family) is found from the registries, so a newly registered algorithm or
family is covered without editing this file. Algorithm-specific accuracy lives in the family
test files; this file makes sure no learner can forget the shared rules: it is built from the
task and its validated options, predicts the shape of its kind, stays finite, and is causal
(the prediction at position i uses only inputs[:, :i+1] and targets[:, :i]).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from iclab.algorithms import ALGORITHMS, Algorithm, build_algorithm
from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.specs import SpecError, resolve_spec
from iclab.tasks import TASKS, Task, make_task

N_DIMS = 4  # below the short prompts' length: under- and overdetermined prefixes both occur
SHORT_PROMPT = 16
BATCH = 3

# Smaller sizes for learners that fit a model per prefix (their defaults are the papers'
# settings, seconds per pair here); every option still goes through the same validation.
QUICK_OPTIONS = {
    "gradient_boosting": {"n_rounds": 5},
    "two_layer_nn": {"hidden": 8, "steps": 5},
}


def small_task(family: str) -> Task:
    return make_task(family, N_DIMS)


def sample(task: Task, seed: int) -> Episode:
    """``BATCH`` prompts, ``SHORT_PROMPT`` long where the family allows it (some need their
    default length: mqar's pairs and queries, bursty classification's bursts)."""
    generator = torch.Generator().manual_seed(seed)
    try:
        return task.sample(BATCH, min(SHORT_PROMPT, type(task).default_n_points), generator)
    except ValueError:  # a ConfigError naming the length the family needs
        return task.sample(BATCH, type(task).default_n_points, generator.manual_seed(seed))


def pairs() -> list[tuple[str, str]]:
    """Every (algorithm, family) such that the algorithm applies to the family."""
    tasks = {family: small_task(family) for family, _ in TASKS}
    return [
        (name, family) for name, cls in ALGORITHMS for family in tasks if cls.applies(tasks[family])
    ]


def build_quick(name: str, task: Task) -> Algorithm:
    """The algorithm with its default options (``QUICK_OPTIONS`` for the slow ones)."""
    cls = ALGORITHMS.get(name)
    return cls(task, cls.Options.model_validate(QUICK_OPTIONS.get(name, {})))


def spliced(first: Episode, second: Episode, cut: int) -> Episode:
    """``first``'s inputs up to ``cut`` (included) and targets before ``cut``, ``second``'s
    after; ``first``'s meta and loss mask. Decision episodes' actions and rewards, which the
    context shows after each step, are spliced as targets are. For token episodes, where
    ``targets[:, t]`` is ``inputs[:, t + 1]``, this is ``first``'s token stream up to ``cut``,
    then ``second``'s."""
    inputs = torch.cat([first.inputs[:, : cut + 1], second.inputs[:, cut + 1 :]], dim=1)
    targets = torch.cat([first.targets[:, :cut], second.targets[:, cut:]], dim=1)
    history = {  # decision episodes: the actions and rewards the context shows, like targets
        name: torch.cat([getattr(first, name)[:, :cut], getattr(second, name)[:, cut:]], dim=1)
        for name in ("actions", "rewards")
        if getattr(first, name) is not None
    }
    return replace(first, inputs=inputs, targets=targets, **history)


PAIRS = pairs()


@pytest.mark.parametrize(("name", "family"), PAIRS)
def test_algorithm_predicts_finite_values_of_its_kind_and_is_causal(name, family):
    task = small_task(family)
    try:
        algorithm = build_quick(name, task)
    except ConfigError as error:  # a default that the family cannot fill in (omp's sparsity)
        assert name in str(error) and "option" in str(error)
        return
    episode, other = sample(task, seed=0), sample(task, seed=1)
    prediction = algorithm.predict(episode)

    expected_shape = episode.targets.shape
    if task.kind != "regression":
        expected_shape += (task.n_classes,)
    assert prediction.shape == expected_shape
    assert prediction.isfinite().all()

    scale = max(1.0, prediction.abs().max().item())
    n_points = episode.n_points
    for cut in sorted({0, n_points // 2, n_points - 1}):
        after = algorithm.predict(spliced(episode, other, cut))
        torch.testing.assert_close(
            after[:, : cut + 1],
            prediction[:, : cut + 1],
            rtol=0,
            atol=1e-6 * scale,
            msg=lambda message, cut=cut: f"{name} on {family}, cut at {cut}: {message}",
        )


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_builds_with_its_defaults_on_some_family(name):
    families = [family for algorithm, family in PAIRS if algorithm == name]
    assert families, f"{name} applies to no registered family"
    built = []
    for family in families:
        try:
            built.append(build_algorithm(name, small_task(family)))
        except ConfigError:
            continue
    assert built, f"{name} needs options on every family it applies to"
    assert all(algorithm.name == name for algorithm in built)


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_option_has_a_valid_default_and_a_description(name):
    options = ALGORITHMS.get(name).Options
    options()  # the defaults validate
    for field, info in options.model_fields.items():
        assert info.description, f"{name} option {field} has no description"


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_an_unknown_option_is_a_spec_error_naming_it(name):
    with pytest.raises(SpecError, match="no_such_option: unknown option"):
        resolve_spec(f"{name}(no_such_option=1)", ALGORITHMS, "algorithm")


def test_an_option_out_of_range_names_the_option_and_the_bound():
    task = make_task("linear_regression", N_DIMS)
    with pytest.raises(SpecError, match=r"k: Input should be greater than or equal to 1 \(got 0\)"):
        build_algorithm("knn(k=0)", task)
    with pytest.raises(SpecError, match="alpha: Input should be a finite number"):
        build_algorithm("ridge(alpha=.inf)", task)


def test_the_learner_is_named_by_the_canonical_spec():
    task = make_task("linear_regression", N_DIMS)
    assert build_algorithm("gd( lr = 0.5,steps=2 )", task).name == "gd(steps=2, lr=0.5)"
    spec = resolve_spec("knn(k=1)", ALGORITHMS, "algorithm")
    assert build_algorithm(spec, task).name == "knn(k=1)"
