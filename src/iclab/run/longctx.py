"""``iclab longctx``: a trained model under KV-cache policies at several budgets, its full cache,
other runs (recurrent state) and the algorithms, all on the same long prompts.

Writes ``RUN/longctx/NNN/``: ``settings.yaml``, ``curves.csv`` (every learner's metric per k),
``memory.csv`` (floats per layer each learner held, its policy family and budget),
``caches.csv`` / ``kept.csv`` (per layer), and three figures: ``curves.png`` (metric vs k at
one budget), ``memory.png`` (metric at the longest context vs memory) and ``kept.png`` (which
positions each eviction policy kept).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from iclab.algorithms import build_algorithm
from iclab.config import RunConfig
from iclab.devices import resolve_device, set_threads
from iclab.errors import ConfigError
from iclab.evaluation.caches import LastExamples, write_cache_tables
from iclab.evaluation.curves import CurvePoint, evaluate, read_rows, write_curves_csv, write_rows
from iclab.io import atomic_write_text
from iclab.kinds import kind_of
from iclab.learner import InContextLearner
from iclab.models import InContextModel
from iclab.models.cached import CachedModel
from iclab.models.caches import POLICIES, build_policy
from iclab.report.caches import memory_figure
from iclab.report.plots import curves_figure, save_figure
from iclab.run.directory import RunDir
from iclab.run.evaluation import (
    evaluation_points,
    keep,
    load_trained_model,
    save_kept_figure,
    with_eval_overrides,
)
from iclab.specs import Spec, resolve_spec, split_specs

DEFAULT_POLICIES = ["window", "sink_window", "h2o", "tova", "snapkv", "knorm", "random"]


@dataclass(frozen=True)
class LearnerMemory:
    """A learner of a long-context sweep: its role (model, policy, run, algorithm, or yardstick:
    an algorithm on the examples a window of the budget holds), family
    (the policy's name; the learner's own name otherwise), its budget (0: none), and the floats
    per layer it held (NaN for algorithms whose state is not counted)."""

    learner: str
    role: str
    family: str
    budget: int
    floats: float


@dataclass(frozen=True)
class LongContext:
    curves: list[CurvePoint]
    memory: list[LearnerMemory]
    directory: Path
    k: int


def budgeted_policies(specs: Sequence[str], budgets: Sequence[int]) -> list[Spec]:
    """Each policy spec at every budget, unless the spec fixes its own budget or takes none."""
    policies = []
    for text in specs:
        spec = resolve_spec(text, POLICIES, "cache policy")
        fields = type(spec.options).model_fields
        if "budget" not in fields or "budget" in spec.given:
            policies.append(spec)
            continue
        given = {name: getattr(spec.options, name) for name in spec.given}
        for budget in budgets:
            options = type(spec.options).model_validate({**given, "budget": budget})
            policies.append(Spec(spec.cls, options))
    return policies


def other_models(paths: Sequence[Path], config: RunConfig, n_points: int) -> list[InContextModel]:
    """The newest models of other runs on the same task, named by their run names."""
    models = []
    for path in paths:
        other = RunDir(Path(path)).load_config()
        if (other.task.name, other.task.n_dims) != (config.task.name, config.task.n_dims):
            raise ConfigError(
                f"--with {path}: trained on {other.task.name} (n_dims={other.task.n_dims}), "
                f"not on {config.task.name} (n_dims={config.task.n_dims}) like the run"
            )
        model = load_trained_model(path, resolve_device(config.eval.device))
        model.check_points(n_points)
        model.name = other.name
        models.append(model)
    names = [model.name for model in models]
    if len(set(names)) != len(names) or config.name in names:
        raise ConfigError(f"--with: runs need distinct names, got {[config.name, *names]}")
    return models


def windowed_yardsticks(
    algorithms: Sequence[InContextLearner], budgets: Sequence[int], tokens_per_example: int
) -> dict[int, LastExamples]:
    """Per budget, the reference algorithm on the examples a window of that many entries holds:
    what the best learner could do with the memory a window cache keeps."""
    if not algorithms:
        return {}
    return {b: LastExamples(algorithms[0], max(1, b // tokens_per_example)) for b in budgets}


def algorithm_memory(name: str, n_dims: int | None) -> float:
    """Floats an algorithm's running state needs: recursive least squares keeps d² + d (the
    optimal recurrent state for linear regression); NaN for the others (not counted)."""
    if name == "least_squares" and n_dims is not None:
        return float(n_dims * n_dims + n_dims)
    return math.nan


def memory_rows(
    model: InContextModel,
    cached: Sequence[CachedModel],
    recurrent: Sequence[InContextModel],
    algorithms: Sequence[InContextLearner],
    windows: dict[int, LastExamples],
    n_points: int,
    n_dims: int | None,
) -> list[LearnerMemory]:
    """What each learner of a sweep held per layer: the full cache and other runs their whole
    state, each policy what its caches held at most, the windowed yardsticks the window cache
    of their budget, algorithms their running state where it is known."""
    rows = [LearnerMemory(model.name, "model", "full cache", 0, model.state_per_layer(n_points))]
    rows += [
        LearnerMemory(
            c.name,
            "policy",
            c.policy.name,
            getattr(c.policy.options, "budget", 0),
            c.floats_per_layer,
        )
        for c in cached
    ]
    rows += [
        LearnerMemory(m.name, "run", m.name, 0, m.state_per_layer(n_points)) for m in recurrent
    ]
    rows += [
        LearnerMemory(a.name, "algorithm", a.name, 0, algorithm_memory(a.name, n_dims))
        for a in algorithms
    ]
    per_entry = 2 * model.backbone.d_model  # a key and a value
    rows += [
        LearnerMemory(w.name, "yardstick", f"{w.learner.name} on a window", b, b * per_entry)
        for b, w in windows.items()
    ]
    return rows


def long_context(
    run_dir: Path,
    policies: Sequence[str] = (),
    budgets: Sequence[int] = (16, 32, 64),
    n_points: int | None = None,
    n_prompts: int = 256,
    others: Sequence[Path] = (),
    show_progress: bool = False,
    threads: int | None = None,
) -> LongContext:
    """Sweep cache policies × budgets on a run's newest model, with its full cache, the
    models of ``others`` and the run's algorithms on the same prompts; write
    ``RUN/longctx/NNN/`` and return what it measured."""
    set_threads(threads)
    run = RunDir(Path(run_dir))
    overrides = [f"eval.n_prompts={n_prompts}"] + (
        [f"eval.n_points={n_points}"] if n_points else []
    )
    config = with_eval_overrides(run.load_config(), overrides, f"iclab longctx {run.path}")
    points = evaluation_points(config)
    if not budgets or min(budgets) < 1:
        raise ConfigError(f"--budgets: give positive entry counts, got {list(budgets)}")
    specs = budgeted_policies(
        [s for text in policies or DEFAULT_POLICIES for s in split_specs(text)], budgets
    )
    device = resolve_device(config.eval.device)
    model = load_trained_model(run.path, device)
    model.check_points(points)
    model.name = "model"
    cached = [CachedModel(model, build_policy(spec)) for spec in specs]
    recurrent = other_models(others, config, points)
    task = config.evaluation_task().build()
    algorithms = [build_algorithm(spec, task) for spec in config.eval.algorithms]
    windows = windowed_yardsticks(algorithms[:1], budgets, model.codec.tokens_per_example)
    evaluation = evaluate(
        [model, *cached, *recurrent, *algorithms, *windows.values()],
        task,
        n_points=points,
        n_prompts=config.eval.n_prompts,
        batch_size=config.eval.batch_size,
        seed=config.eval.seed,
        device=device,
        show_progress=show_progress,
    )
    memory = memory_rows(model, cached, recurrent, algorithms, windows, points, config.task.n_dims)
    k = max(p.k for p in evaluation.curves)
    settings = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "policies": [str(spec) for spec in specs],
        "budgets": list(budgets),
        "with": [str(path) for path in others],
        "n_points": points,
        "n_prompts": config.eval.n_prompts,
        "seed": config.eval.seed,
    }
    directory = run.longctx_dir
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".staging-"))
    try:
        atomic_write_text(staging / "settings.yaml", yaml.safe_dump(settings, sort_keys=False))
        write_curves_csv(evaluation.curves, staging / "curves.csv")
        write_rows(memory, LearnerMemory, staging / "memory.csv")
        write_cache_tables(cached, staging)
        write_figures(evaluation.curves, memory, cached, config, budgets, k, staging)
        kept = keep(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return LongContext(evaluation.curves, memory, kept, k)


def write_figures(
    curves: Sequence[CurvePoint],
    memory: Sequence[LearnerMemory],
    cached: Sequence[CachedModel],
    config: RunConfig,
    budgets: Sequence[int],
    k: int,
    directory: Path,
) -> None:
    """curves.png at the middle budget, memory.png, and kept.png at the middle budget."""
    kind = kind_of(config.task.build().kind)
    budget = sorted(budgets)[len(budgets) // 2]
    shown = {m.learner for m in memory if m.budget in (0, budget)}
    points = [p for p in curves if p.learner in shown]
    trained = config.task.n_points - 1 if evaluation_points(config) > config.task.n_points else None
    title = f"{config.name}: cache policies at a budget of {budget} entries per head and layer"
    figure = curves_figure(
        points,
        title,
        kind.metric.label,
        kind.reference_k(config.task.n_dims),
        trained,
        kind.position_label,
    )
    save_figure(figure, directory / "curves.png")
    flat = {m.learner: m.floats for m in memory if m.role == "algorithm"}
    with_memory = {m.learner: m.floats for m in memory if m.role != "algorithm"}
    families = {m.learner: m.family for m in memory}
    figure = memory_figure(
        curves,
        with_memory,
        families,
        k,
        f"{config.name}: after {k} examples",
        kind.metric.label,
        flat,
    )
    save_figure(figure, directory / "memory.png")
    at_budget = [c for c in cached if getattr(c.policy.options, "budget", None) == budget]
    title = f"{config.name}: what each policy kept at the end of the prompts"
    save_kept_figure(at_budget, title, directory / "kept.png")


def read_memory(directory: Path) -> list[LearnerMemory]:
    return read_rows(directory / "memory.csv", LearnerMemory)
