"""What every reproduction provides: a paper's headline claim, the runs that test it at a smoke,
a CPU or a paper scale, a figure like the paper's, and an honest verdict.

``iclab reproduce NAME --scale smoke|cpu|paper`` writes ``OUT/NAME/``: the runs (normal run
directories, resumed after a crash and not retrained when complete), ``figure.png`` and
``verdict.json`` (the claim in one sentence, the measured quantity, the threshold that decides,
``reproduced | not reproduced | inconclusive`` and the numbers).

A reproduction's runs produce numbers; its verdict is ``decide(numbers)``, a pure function of
the numbers verdict.json records, with thresholds fixed before any run (tested from tables of
cases in tests/test_reproduction_decisions.py). The smoke scale runs the same code in seconds
(a few training steps of tiny models): it tests the plumbing, and its verdict means nothing.

Everything a reproduction needs from the run layer (training, evaluation, models) goes through
the helpers at the end of this module.
"""

from __future__ import annotations

import csv
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import torch

from iclab.config import RunConfig, load_config, merged
from iclab.errors import ConfigError
from iclab.evaluation.curves import (
    CurvePoint,
    PairedDifference,
    read_curves_csv,
    read_differences_csv,
    write_curves_csv,
    write_differences_csv,
)
from iclab.io import atomic_write_text, read_yaml
from iclab.learner import InContextLearner
from iclab.models import InContextModel
from iclab.registry import Registry
from iclab.reproductions.parallel import complete, train_in_parallel
from iclab.run import (
    RunDir,
    environment,
    evaluate_config,
    evaluate_run,
    load_trained_model,
    train_run,
)

Scale = Literal["smoke", "cpu", "paper"]
SCALES: tuple[Scale, ...] = get_args(Scale)
Outcome = Literal["reproduced", "not reproduced", "inconclusive"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
DIGITS = 4  # verdict.json records the numbers to this many decimals, and decide reads those

# The smoke scale's common sections: a few steps of a one-layer width-16 model, no curriculum,
# a handful of evaluation prompts.
SMOKE_MODEL = {"n_layers": 1, "d_model": 16, "n_heads": 2}
SMOKE_TRAIN = {
    "steps": 4,
    "batch_size": 8,
    "warmup_steps": 0,
    "log_every": 2,
    "checkpoint_every": 4,
    "curriculum": {"dims": None, "points": None},
    "stop_at": None,
}
SMOKE_EVAL = {"n_prompts": 32, "batch_size": 32}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a reproduction, as ``verdict.json`` holds it."""

    reproduction: str
    paper: str
    claim: str
    quantity: str
    threshold: str
    verdict: Outcome
    numbers: dict[str, float] = field(default_factory=dict)
    scale: str = "cpu"
    minutes: float | None = None  # training and judging, as ``reproduce`` timed them


@dataclass(frozen=True)
class PresetChanges:
    """A run's config as data: a preset (or YAML file) and the sections that change, written
    as a config file would write them (``{"train": {"steps": 6000}}``)."""

    preset: str
    changes: dict[str, Any] = field(default_factory=dict)

    def config(self, **more: Any) -> RunConfig:
        """The preset with ``changes`` and then ``more`` merged in, validated."""
        return load_config(self.preset).updated(**merged(self.changes, more))


class Reproduction(ABC):
    """One paper's claim. Subclasses set the class attributes, implement ``decide`` (pure: the
    outcome from the numbers alone) and ``run``, which trains and evaluates what it needs under
    ``out`` (with ``trained`` / ``evaluated``, so a rerun resumes), saves ``out/figure.png``
    and returns ``self.judged(numbers, ...)``."""

    name: ClassVar[str] = "unregistered"  # set by @register_reproduction
    paper: ClassVar[str]
    claim: ClassVar[str]
    # minutes in `iclab reproduce all --scale cpu --jobs 2` on an idle 2-core machine (AMD EPYC
    # with AVX-512-BF16, 2026-12-07: docs/REPRODUCTIONS.md), for `--list` and `all`'s progress
    cpu_minutes: ClassVar[float]

    @staticmethod
    @abstractmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        """The outcome from the numbers ``run`` records, by the thresholds fixed before any run:
        a pure function, so anyone can re-decide a verdict.json and the rule is tested from a
        table of cases."""

    @staticmethod
    @abstractmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        """Every model ``run`` trains at ``scale``, by its run directory under ``out``: what
        ``trained_all`` trains and what the scale's cost estimate counts (``budget``)."""

    @abstractmethod
    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        """Train (``trained_all(self.trainings(scale), out)``), evaluate, draw the figure and
        return ``judged`` numbers."""

    def judged(
        self, numbers: dict[str, float], scale: Scale, quantity: str, threshold: str
    ) -> Verdict:
        """The verdict on ``numbers`` as verdict.json records them (``recorded``), decided on
        exactly those."""
        numbers = recorded(numbers)
        return Verdict(
            reproduction=self.name,
            paper=self.paper,
            claim=self.claim,
            quantity=quantity,
            threshold=threshold,
            verdict=self.decide(numbers),
            numbers=numbers,
            scale=scale,
        )


def recorded(numbers: dict[str, float]) -> dict[str, float]:
    """``numbers`` as verdict.json records them: floats rounded to ``DIGITS`` decimals."""
    return {
        key: round(value, DIGITS) if isinstance(value, float) else value
        for key, value in numbers.items()
    }


REPRODUCTIONS: Registry[type[Reproduction]] = Registry("reproduction", keywords=["all"])
register_reproduction = REPRODUCTIONS.register


def reproduce(
    name: str,
    out: Path,
    scale: Scale = "cpu",
    show_progress: bool = True,
    jobs: int = 1,
    threads: int | None = None,
) -> Verdict:
    """Run reproduction ``name`` in ``out/name`` and write its ``verdict.json``. With ``jobs``
    > 1 its runs are first trained that many at a time, each in its own process with
    ``threads`` torch threads (``train_in_parallel``); ``run`` then finds them trained."""
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    reproduction = REPRODUCTIONS.get(name)()
    directory = Path(out) / name
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if jobs > 1:
        train_in_parallel(reproduction.trainings(scale), directory, jobs, threads, show_progress)
    verdict = reproduction.run(directory, scale, show_progress)
    verdict = replace(verdict, minutes=round((time.perf_counter() - started) / 60, 2))
    record = {**asdict(verdict), "environment": environment()}
    atomic_write_text(directory / "verdict.json", json.dumps(record, indent=2) + "\n")
    return verdict


def seeds_in(numbers: dict[str, float], key: str) -> list[str]:
    """The seeds (``"seed0"``, …) of numbers recorded per training seed as ``{seed}_{key}``,
    only those (``seed0_untrained_{key}`` is not seed 0's ``{key}``): an error when there are
    none (a decision needs at least one run)."""
    pattern = re.compile(rf"(seed\d+)_{re.escape(key)}")
    seeds = [match[1] for name in numbers if (match := pattern.fullmatch(name))]
    if not seeds:
        raise ValueError(f"no seed's {key!r} among the numbers to decide on")
    return seeds


def agreed(outcomes: Iterable[Outcome]) -> Outcome:
    """The outcome every training seed gives; inconclusive when they differ (a verdict that
    flips with the seed is not one)."""
    distinct = set(outcomes)
    return distinct.pop() if len(distinct) == 1 else "inconclusive"


def curve(points: list[CurvePoint], learner: str, shift: str = "none") -> dict[int, CurvePoint]:
    """One learner's curve, by k."""
    return {p.k: p for p in points if p.learner == learner and p.shift == shift}


def late_average(
    rows: Iterable[CurvePoint | PairedDifference], first_k: int
) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) averaged over the rows with k ≥ ``first_k`` (the interval's ends
    averaged too, a conservative band for the late part of a curve)."""
    late = [row for row in rows if row.k >= first_k]
    if not late:
        raise ValueError(f"no prefix length k ≥ {first_k} was evaluated")
    mean, low, high = (
        sum(getattr(row, end) for row in late) / len(late) for end in ("mean", "ci_low", "ci_high")
    )
    return mean, low, high


# --- the run layer: training, evaluation and models ---------------------------------------------


def trained(config: RunConfig, run_dir: Path, show_progress: bool = True) -> RunDir:
    """The run of ``config`` in ``run_dir``: trained, continued after a crash, or, when it is
    already complete, left as it is."""
    run = RunDir(run_dir)
    if not complete(config, run.path):
        train_run(config, run.path, resume=run.exists(), show_progress=show_progress)
    return run


def trained_all(
    configs: dict[str, RunConfig], out: Path, show_progress: bool = True
) -> dict[str, RunDir]:
    """Every run of ``configs`` (a reproduction's ``trainings``) trained in ``out / key``."""
    return {key: trained(config, out / key, show_progress) for key, config in configs.items()}


def newer_than_checkpoints(table: Path, runs: Iterable[RunDir]) -> bool:
    """Whether ``table`` exists and was written after every checkpoint of ``runs``."""
    checkpoints = [p.stat().st_mtime for run in runs for p in run.checkpoints.glob("*/meta.json")]
    return table.exists() and table.stat().st_mtime >= max(checkpoints, default=0.0)


def evaluated(run: RunDir) -> Path:
    """The directory of the run's newest evaluation with its config's own settings: read back
    when it is newer than the run's last checkpoint, evaluated afresh otherwise."""
    latest = run.latest_evaluation()
    settings = None if latest is None else latest / "settings.yaml"
    if settings is not None and settings.is_file() and newer_than_checkpoints(settings, [run]):
        used = read_yaml(settings)
        if isinstance(used, dict) and used.get("eval") == run.load_config().eval.model_dump(
            mode="json"
        ):
            return latest
    return evaluate_run(run.path).directory


def evaluated_curves(run: RunDir) -> list[CurvePoint]:
    """The curves of ``evaluated(run)``."""
    return read_curves_csv(evaluated(run) / "curves.csv")


def compared(
    runs: dict[str, RunDir], config: RunConfig, directory: Path
) -> tuple[list[CurvePoint], list[PairedDifference]]:
    """The trained models of ``runs`` (each named by its key) and ``config``'s algorithms on
    the same prompts of ``config``'s task, with the paired differences to ``eval.reference``:
    written to ``directory`` (curves.csv, differences.csv) and read back from there while they
    are newer than every run's checkpoints."""

    def models() -> list[InContextLearner]:
        return [named(trained_model(run), name) for name, run in runs.items()]

    curves = compared_learners(models, config, directory, runs.values())
    return curves, read_differences_csv(directory / "differences.csv")


def compared_learners(
    learners: Callable[[], Sequence[InContextLearner]],
    config: RunConfig,
    directory: Path,
    runs: Iterable[RunDir],
) -> list[CurvePoint]:
    """``learners()`` (models of ``runs``, or learners made from them) and ``config``'s
    algorithms on the same prompts, written to ``directory`` (curves.csv, differences.csv)
    and read back while they are newer than every run's checkpoints."""
    curves_path, differences_path = directory / "curves.csv", directory / "differences.csv"
    if newer_than_checkpoints(differences_path, list(runs)):
        return read_curves_csv(curves_path)
    evaluation = evaluate_config(config, learners())
    write_curves_csv(evaluation.curves, curves_path)
    write_differences_csv(evaluation.differences, differences_path)
    return evaluation.curves


def trained_model(run: RunDir) -> InContextModel:
    """The model of the run's newest valid checkpoint, in eval mode."""
    return load_trained_model(run.path)


def kept_models(run: RunDir, steps: Sequence[int]) -> list[InContextModel]:
    """The run's model at each of ``steps`` (its kept checkpoints, as ``kept_steps`` lists them:
    the caller has them already, and listing verifies every checkpoint), each named ``step N``."""
    return [named(load_trained_model(run.path, step=step), f"step {step}") for step in steps]


def number_rows(path: Path) -> list[dict[str, float]]:
    """The rows of a CSV table whose every column is a number (as ``table_csv`` writes them)."""
    with path.open() as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def named(model: InContextModel, name: str) -> InContextModel:
    """``model``, named ``name`` in evaluations (its curves, differences and figures)."""
    model.name = name
    return model


def untrained_model(config: RunConfig, seed: int = 0) -> InContextModel:
    """The model ``config`` trains, as initialised from torch seed ``seed``."""
    torch.manual_seed(seed)
    return config.build_model()
