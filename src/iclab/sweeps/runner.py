"""Running a sweep: each trial is a normal run directory trained and evaluated in a Ray Tune
worker; trials that are invalid or already completed by an earlier run are settled without Ray.
Ray is imported only when there is something to run."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from iclab.config import RunConfig
from iclab.errors import ConfigError, UserError
from iclab.progress import duration
from iclab.run import RunDir, evaluate_run, train_run
from iclab.run.catalog import headline_of, last_logged_step
from iclab.sweeps.spec import SweepSpec, Trial, expand_trials, load_sweep, metric_sense
from iclab.sweeps.summary import SweepResult, TrialRow, write_summary
from iclab.training.trainer import as_started_like

TUNE_LOGGER = "ray.tune.tune"  # the logger of Tune's fit loop (ray/tune/tune.py)


@dataclass(frozen=True)
class TrialJob:
    """What a Ray worker needs to run one trial (plain data, so it pickles cheaply)."""

    name: str
    config: dict[str, Any]
    run_dir: str
    metric: Literal["headline", "loss"]
    cpus: int


# --- running one trial (in a Ray worker) ------------------------------------------------------


def run_trial(job: TrialJob) -> float:
    """Train the trial's run (resuming an interrupted one; a completed one is not retrained),
    evaluate it when the metric needs it, and return the metric."""
    torch.set_num_threads(job.cpus)
    run = RunDir(Path(job.run_dir))
    trained = False
    if run.read_info().get("status") != "completed":
        config = RunConfig.model_validate(job.config)
        train_run(config, run.path, resume=run.exists(), show_progress=False)
        trained = True
    if job.metric == "headline" and (trained or run.latest_evaluation() is None):
        evaluate_run(run.path)
    value = read_metric(run, job.metric)
    if value is None:
        raise RuntimeError(f"{run.path}: completed, but has no {job.metric} to report")
    return value


def read_metric(run: RunDir, metric: str) -> float | None:
    """The model's mean at the largest k on the training distribution (``headline``, as the run
    catalog reads it), or the last logged training loss (``loss``); None when the run has not
    written it."""
    if metric == "loss":
        rows = run.read_metrics()
        return float(rows[-1]["loss"]) if rows else None
    latest = run.latest_evaluation()
    return None if latest is None else headline_of(latest / "curves.csv")[0]


def tune_trial(params: dict[str, int], jobs: Sequence[TrialJob]) -> None:
    """Ray Tune's function trainable: run the trial ``params["trial"]`` and report its metric."""
    from ray import tune

    tune.report({"value": run_trial(jobs[params["trial"]])})


# --- the sweep --------------------------------------------------------------------------------


def run_sweep(
    path: Path,
    out: Path = Path("runs"),
    address: str | None = None,
    on_trial: Callable[[TrialRow], None] | None = None,
    overrides: Sequence[str] = (),
    on_progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every trial of a sweep file (with ``overrides`` for every trial, after the file's
    ``set``) on Ray Tune (a local instance unless ``address`` names a cluster, whose nodes must
    share ``out``), then write the summary. Trials whose run directory already holds a completed
    run are read back, not retrained. ``on_trial`` hears of each trial as its outcome is
    known, ``on_progress`` of trials starting and, every half minute, of where the running
    ones are."""
    spec = load_sweep(path, overrides)
    if address is not None:
        check_reachable(address)
    trials = expand_trials(spec)
    directory = (Path(out) / spec.name).resolve()
    measure, label, mode = metric_sense(spec, trials)
    outcomes: dict[str, TrialRow] = {}
    jobs = []
    for trial in trials:
        row = known_outcome(trial, directory, spec.metric)
        if row is not None:
            outcomes[trial.name] = row
            if on_trial is not None:
                on_trial(row)
        else:
            run_dir = str(directory / trial.name)
            config = trial.config.to_dict()
            jobs.append(TrialJob(trial.name, config, run_dir, spec.metric, spec.cpus_per_trial))
    if jobs:
        directory.mkdir(parents=True, exist_ok=True)
        values = {trial.name: trial.values for trial in trials}
        reporter = TrialEvents(jobs, values, len(trials) - len(jobs), on_trial, on_progress)
        outcomes |= run_on_ray(spec, jobs, values, directory, address, reporter)
    missing = [trial.name for trial in trials if trial.name not in outcomes]
    if missing:  # Tune returns early, without the trials it had not finished, on Ctrl-C
        raise SweepInterrupted(
            f"{path}: the sweep stopped with {len(trials) - len(missing)} of {len(trials)} "
            f"trials done ({missing[0]} and {len(missing) - 1} more not); run the same command "
            "again to go on: done trials are read back, an interrupted one resumes from its "
            "last checkpoint"
        )
    rows = [outcomes[trial.name] for trial in trials]
    return write_summary(spec, directory, measure, label, mode, rows)


class SweepInterrupted(UserError):
    """A sweep that stopped (Ctrl-C) before every trial had an outcome."""


def check_reachable(address: str) -> None:
    """Fail fast when nothing listens at a ``host:port`` address: Ray retries one for many
    minutes (``auto`` and other forms are left to Ray)."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({error})") from None


def known_outcome(trial: Trial, directory: Path, metric: str) -> TrialRow | None:
    """The row of a trial that needs no Ray: invalid, or completed by an earlier run of the
    sweep. A run directory that holds another config is an error: rename the sweep."""
    if trial.config is None:
        return TrialRow(trial.name, trial.values, "invalid", error=trial.problem)
    run = RunDir(directory / trial.name)
    if not run.exists():
        return None
    existing = run.load_config()
    expected = as_started_like(trial.config, existing)
    if existing.digest() != expected.digest():
        raise ConfigError(
            f"{run.path} holds a run of another config (hash {existing.digest()}, this sweep's "
            f"trial: {expected.digest()}): give the changed sweep another name, or delete it"
        )
    value = read_metric(run, metric) if run.read_info().get("status") == "completed" else None
    if value is None:
        return None
    return TrialRow(trial.name, trial.values, "completed", value)


def run_on_ray(
    spec: SweepSpec,
    jobs: list[TrialJob],
    values: dict[str, dict[str, Any]],
    directory: Path,
    address: str | None,
    reporter: TrialEvents,
) -> dict[str, TrialRow]:
    """Run the jobs as one Tune experiment (Tune's files in ``directory/.tune``) on the Ray
    instance this process has already started (tests share one; ``address`` is then unused),
    else on the cluster at ``address``, else on a local instance; shut down what it started."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError("iclab sweep needs Ray Tune: pip install 'iclab[sweep]'") from None

    started = not ray.is_initialized()
    if started:
        local_cpus = max(os.cpu_count() or 1, spec.cpus_per_trial)
        if spec.max_concurrent is not None:
            local_cpus = spec.max_concurrent * spec.cpus_per_trial
        try:
            ray.init(
                address=address,
                num_cpus=local_cpus if address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        except ConnectionError as error:
            raise ConfigError(f"--address {address}: no Ray cluster there ({error})") from None
    names = [job.name for job in jobs]
    resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(tune_trial, jobs=jobs), resources),
            param_space={"trial": tune.grid_search(list(range(len(jobs))))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=spec.max_concurrent,
                reuse_actors=True,  # one torch import per worker, not per trial
                trial_name_creator=lambda trial: names[trial.config["trial"]],
                trial_dirname_creator=lambda trial: names[trial.config["trial"]],
            ),
            run_config=tune.RunConfig(
                storage_path=str(directory / ".tune"),
                verbose=0,
                callbacks=[tune_callback(reporter)],
            ),
        )
        # the legacy reporter honours verbose=0; trials keep the working directory, so
        # relative paths in a config mean what they mean to the user
        with (
            environment(RAY_AIR_NEW_OUTPUT="0", RAY_CHDIR_TO_TRIAL_DIR="0"),
            without_restore_hint(),
        ):
            results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    return finished_rows(results, jobs, values, reporter.finished)


def finished_rows(
    results: Iterable[Any],
    jobs: Sequence[TrialJob],
    values: dict[str, dict[str, Any]],
    finished: set[str],
) -> dict[str, TrialRow]:
    """The rows of Tune's ``results`` for the trials that ``finished`` (completed or failed).
    Stopped by Ctrl-C, Tune also returns the trials it was running, metric-less: those are
    left out, to be run again, not reported as failed."""
    rows = {}
    for result in results:
        job = jobs[result.config["trial"]]
        if job.name in finished:
            rows[job.name] = outcome_row(job.name, values[job.name], result.metrics, result.error)
    return rows


def outcome_row(
    name: str,
    values: dict[str, Any],
    metrics: dict[str, Any] | None,
    error: BaseException | str | None,
) -> TrialRow:
    """A finished trial's row; ``error``: the exception (from Tune's results) or its summary."""
    if error is not None:
        summary = error if isinstance(error, str) else error_summary(error)
        return TrialRow(name, values, "failed", error=summary)
    value = (metrics or {}).get("value")
    if value is None:
        return TrialRow(name, values, "failed", error="the trial reported no metric")
    return TrialRow(name, values, "completed", float(value))


def error_summary(error: BaseException) -> str:
    """The last line of the trial's traceback: the original exception's type and message
    (Ray wraps it in a ``RayTaskError`` whose ``cause`` it is), a multi-line message joined
    with ``; ``; for any other error, the last line of its text."""
    cause = getattr(error, "cause", None)
    if cause is None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return lines[-1] if lines else type(error).__name__
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {'; '.join(lines)}" if lines else type(cause).__name__


def error_text_summary(text: str) -> str:
    """``error_summary`` of a traceback written as text (a trial's error.txt, which the sweep
    reads rather than unpickling Tune's copy of the exception): the exception's lines after the
    last indented traceback line, its type without its module."""
    lines = [line for line in text.splitlines() if line.strip()]
    tail: list[str] = []
    for line in reversed(lines):
        if line[0].isspace() or line.startswith("Failure #"):
            break
        tail.append(line.strip())
    summary = "; ".join(reversed(tail))
    return re.sub(r"^[\w.]+\.(\w+): ", r"\1: ", summary)


HEARTBEAT_SECONDS = 30.0


class TrialEvents:
    """What the sweep tells its caller as Tune runs the trials: each finished trial's row
    (``on_trial``), and lines (``on_progress``) when a trial starts and, every half minute,
    where the running ones are (the steps their run directories have logged)."""

    def __init__(
        self,
        jobs: Sequence[TrialJob],
        values: dict[str, dict[str, Any]],
        settled: int,
        on_trial: Callable[[TrialRow], None] | None,
        on_progress: Callable[[str], None] | None,
    ) -> None:
        self.jobs, self.values, self.settled = list(jobs), values, settled
        self.on_trial, self.on_progress = on_trial, on_progress
        self.total = settled + len(self.jobs)
        self.running: set[int] = set()
        self.finished: set[str] = set()  # names of the trials Tune has completed or failed
        self.started = self.last_heartbeat = time.perf_counter()

    def started_trial(self, index: int) -> None:
        self.running.add(index)
        self.say(f"started {self.jobs[index].name} ({self.status()})")

    def finished_trial(self, index: int, row: TrialRow) -> None:
        self.running.discard(index)
        self.finished.add(self.jobs[index].name)
        if self.on_trial is not None:
            self.on_trial(row)

    def tick(self) -> None:
        """A heartbeat line when half a minute has passed since the last."""
        if time.perf_counter() - self.last_heartbeat < HEARTBEAT_SECONDS or not self.running:
            return
        self.last_heartbeat = time.perf_counter()
        where = ", ".join(self.where(self.jobs[index]) for index in sorted(self.running))
        self.say(f"sweep: {self.status()}; {where}")

    @staticmethod
    def where(job: TrialJob) -> str:
        """``trial-001 step 300/1500``: the steps its run directory has logged."""
        step = last_logged_step(Path(job.run_dir) / "metrics.jsonl")
        return f"{job.name} step {step}/{job.config['train']['steps']}"

    def status(self) -> str:
        elapsed = duration(time.perf_counter() - self.started)
        done = self.settled + len(self.finished)
        return f"{done}/{self.total} done, {len(self.running)} running, {elapsed}"

    def say(self, line: str) -> None:
        if self.on_progress is not None:
            self.on_progress(line)


def tune_callback(events: TrialEvents) -> Any:
    """A Tune callback passing trial starts, results and heartbeats to ``events``."""
    from ray import tune

    class Reporter(tune.Callback):
        def __init__(self, events: TrialEvents) -> None:
            self.events: TrialEvents | None = events

        def __getstate__(self) -> dict[str, Any]:
            """Tune saves its callbacks with the experiment; the saved copy reports nothing
            (the events may hold a console, which does not pickle)."""
            return {"events": None}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.events is not None:
                self.events.started_trial(trial.config["trial"])

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if self.events is not None:
                self.events.tick()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.report(trial, None)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            # the trial has just written its traceback beside it, as text (error.txt)
            text = Path(trial.error_file).read_text() if trial.error_file else ""
            self.report(trial, error_text_summary(text) or "failed; sweep.csv will say why")

        def report(self, trial: Any, error: str | None) -> None:
            if self.events is not None:
                index = trial.config["trial"]
                name = self.events.jobs[index].name
                row = outcome_row(name, self.events.values[name], trial.last_result, error)
                self.events.finished_trial(index, row)

    return Reporter(events)


class RestoreHintFilter(logging.Filter):
    """Drops Tune's Ctrl-C hint to resume with ``Tuner.restore``: iclab's own message says how
    a stopped sweep goes on (the same command again), and two instructions would disagree."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


@contextlib.contextmanager
def without_restore_hint() -> Iterator[None]:
    """``RestoreHintFilter`` on Tune's logger for the duration of the block."""
    logger, hint = logging.getLogger(TUNE_LOGGER), RestoreHintFilter()
    logger.addFilter(hint)
    try:
        yield
    finally:
        logger.removeFilter(hint)


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for the duration of the block."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
