"""Training a reproduction's runs several at a time, each in its own process.

Small models use a second torch thread poorly, so on a machine of N cores N one-thread
trainings side by side finish sooner than the same runs one after another with N threads each
(1.22-1.36x on 2 cores: benchmarks/RESULTS.md). Each process trains one run to completion with
the run layer's own ``train_run`` (checkpoints, resume, atomic writes unchanged); the parent
shows their combined progress from the steps each run has logged.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path

from iclab.config import RunConfig
from iclab.devices import set_threads
from iclab.errors import ConfigError
from iclab.progress import progress
from iclab.reproductions.budget import cpu_step_seconds
from iclab.run import RunDir, train_run
from iclab.run.catalog import last_logged_step
from iclab.run.tracking import flatten_config
from iclab.training.trainer import as_started_like

POLL_SECONDS = 2.0


def complete(config: RunConfig, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds ``config``'s run trained to its last step; a ``ConfigError``
    when it holds a run of another config (continuing it would mix two settings in one run)."""
    run = RunDir(run_dir)
    if not run.exists():
        return False
    changed = changed_fields(run.load_config(), config)
    if changed:
        shown = ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "")
        raise ConfigError(
            f"{run.path} holds a run of another config ({shown} differ): delete it, or give "
            "the reproduction another --out"
        )
    info = run.read_info()
    return info.get("status") == "completed" and info.get("steps") == config.train.steps


def changed_fields(existing: RunConfig, wanted: RunConfig) -> list[str]:
    """The dotted fields in which a run's saved config differs from ``wanted`` as the trainer
    would have started it (``as_started_like``), leaving out what may differ in the same run:
    its name, tracking and length (a shorter run is continued)."""
    ignored = ("name", "logging", "train.steps")
    old = flatten_config(existing.model_dump(mode="json"))
    new = flatten_config(as_started_like(wanted, existing).model_dump(mode="json"))
    return sorted(
        key
        for key in old.keys() | new.keys()
        if old.get(key) != new.get(key) and not any(key.startswith(i) for i in ignored)
    )


def train_one(config: RunConfig, run_dir: Path) -> None:
    """A worker's job: train (or continue) one run, without a progress bar of its own."""
    train_run(config, run_dir, resume=RunDir(run_dir).exists(), show_progress=False)


def logged(run_dir: Path) -> int:
    """The last step ``run_dir``'s run logged, read while it trains (0 before the first)."""
    return last_logged_step(RunDir(run_dir).metrics_path)


def default_threads(jobs: int) -> int:
    """Torch threads per process when ``jobs`` train at once: the cores shared out evenly."""
    return max(1, (os.cpu_count() or 1) // jobs)


def train_in_parallel(
    configs: dict[str, RunConfig],
    out: Path,
    jobs: int,
    threads: int | None = None,
    show_progress: bool = True,
) -> None:
    """Train every run of ``configs`` (``out / key``) that is not complete, ``jobs`` at a time
    (at most one per run) with ``threads`` torch threads each (default: ``default_threads``).
    The first failure is raised once the runs already started have stopped."""
    pending = {key: config for key, config in configs.items() if not complete(config, out / key)}
    if not pending:
        return
    jobs = min(jobs, len(pending))  # one run left: all the cores' threads for it
    threads = threads or default_threads(jobs)
    # each run's steps weighted by their estimated time: the time left is not read off a count
    # of unequal steps (a reproduction's long and short runs share the bar)
    milliseconds = {key: 1000 * cpu_step_seconds(config) for key, config in pending.items()}
    total = round(sum(milliseconds[key] * c.train.steps for key, c in pending.items()))
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    runs = f"{len(pending)} runs" if len(pending) > 1 else "1 run"
    description = f"training {runs}, {jobs} at a time"
    with (
        ProcessPoolExecutor(
            jobs, mp_context=context, initializer=set_threads, initargs=(threads,)
        ) as pool,
        progress(description, total, enabled=show_progress, fields=["runs"], count=False) as bar,
    ):
        futures = [pool.submit(train_one, config, out / key) for key, config in pending.items()]
        running = set(futures)
        while running:
            _, running = wait(running, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
            steps = {key: min(logged(out / key), c.train.steps) for key, c in pending.items()}
            done = sum(steps[key] == config.train.steps for key, config in pending.items())
            bar.update(
                round(sum(milliseconds[key] * step for key, step in steps.items())),
                runs=f"{done}/{len(pending)} done",
            )
            if any(future.done() and future.exception() for future in futures):
                for future in running:
                    future.cancel()  # those not started yet; the running ones finish
                break
    for future in futures:
        if not future.cancelled():
            future.result()  # the first failure, with its own message
