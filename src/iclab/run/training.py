"""Train a run directory: check everything first, then write."""

from __future__ import annotations

import errno
import warnings
from contextlib import nullcontext, suppress
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from iclab.config import RunConfig, TrainConfig
from iclab.devices import set_threads
from iclab.errors import DiskFullError, DivergedError, RunExistsError
from iclab.metrics import target_reached
from iclab.run.directory import RunDir
from iclab.run.log import StepCallback, TrainingLog
from iclab.training.checkpoint import latest_valid_checkpoint
from iclab.training.distributed import Processes, join_processes
from iclab.training.schedule import curriculum_shortfall, schedule_jump
from iclab.training.trainer import Trainer, with_batch_shards


def warn_about_the_schedule(meta: dict, config: RunConfig, step: int) -> None:
    """A warning when resuming with another train section changes the learning rate."""
    try:
        before = TrainConfig.model_validate(meta["config"]["train"])
    except (KeyError, TypeError, ValidationError):  # a checkpoint from another iclab: no advice
        return
    jump = schedule_jump(before, config.train, step)
    if jump is not None:
        warnings.warn(jump, stacklevel=3)


def train_run(
    config: RunConfig,
    run_dir: Path,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    on_step: StepCallback | None = None,
    threads: int | None = None,
) -> Trainer:
    """Train a new run in ``run_dir`` or, with ``resume``, continue the one that is there from
    its newest valid checkpoint (with ``config``, which may differ from the run's in what the
    checkpoint allows, e.g. more steps).

    Nothing is written before the config has built a model and any checkpoint has loaded into
    it, so a config that does not fit the run leaves the directory as it was. One process
    trains a run at a time: a second fails at once (``RunBusyError``), before reading anything.
    Under torchrun every process calls this; only rank 0 writes (and locks). ``threads`` sets
    torch's CPU threads (for the whole process; 1 suits several trainings sharing a few cores).
    """
    set_threads(threads)
    processes = join_processes()
    run = RunDir(Path(run_dir))
    with run.writer_lock() if processes.is_main else nullcontext():
        return _train_locked(run, config, processes, resume, show_progress, console, on_step)


def _train_locked(
    run: RunDir,
    config: RunConfig,
    processes: Processes,
    resume: bool,
    show_progress: bool,
    console: Console | None,
    on_step: StepCallback | None,
) -> Trainer:
    """``train_run``'s work, with the run's lock held."""
    console = console or Console(stderr=True)
    if run.exists() and not resume:
        raise RunExistsError(
            f"{run.path} already holds a run; continue it with `iclab train --resume {run.path}` "
            "or choose another --out"
        )
    config = with_batch_shards(config, processes.world_size)
    trainer = Trainer(config, processes)
    config = trainer.config  # precision auto: fixed to what this device runs fast
    checkpoint = (
        latest_valid_checkpoint(run.checkpoints, trainer.model, trainer.optimizer)
        if resume
        else None
    )
    where = escape(str(run.path))  # for rich: a path may hold brackets
    if checkpoint is not None:
        meta = trainer.load(checkpoint)
        if trainer.step >= config.train.steps:
            console.print(
                f"{where} has trained {trainer.step} of {config.train.steps} steps: nothing "
                "to train (raise train.steps to continue, e.g. --set "
                f"train.steps={2 * config.train.steps})",
                soft_wrap=True,
            )
            return trainer
        if trainer.stopped is not None:
            console.print(
                f"{where} reached its target at step {trainer.step}: "
                f"{target_reached(trainer.stopped)}: nothing to train (to train on: iclab "
                f"train --resume {where} --set train.stop_at=null)",
                soft_wrap=True,
            )
            return trainer
        warn_about_the_schedule(meta, config, trainer.step)
    shortfall = curriculum_shortfall(config)
    if shortfall is not None and processes.is_main:
        warnings.warn(shortfall, stacklevel=2)
    processes.barrier()  # every process has checked before the first one writes
    try:
        if processes.is_main:
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(config)
            run.truncate_metrics(trainer.step)
            if resume:
                console.print(
                    f"resuming {where} from step {trainer.step}"
                    if checkpoint is not None
                    else f"[yellow]no valid checkpoint in {where}; starting from step 0",
                    soft_wrap=True,
                )
        log = (
            TrainingLog(trainer, run, console, show_progress, on_step)
            if processes.is_main
            else None
        )
        with log or nullcontext():
            trainer.fit(log)
    except DivergedError as error:
        raise diverged(run, trainer, processes, error) from None
    except OSError as error:
        if error.errno != errno.ENOSPC:
            run_failed(run, trainer, processes, "failed")
            raise
        run_failed(run, trainer, processes, "interrupted")
        raise disk_full(run, trainer, error) from None
    except BaseException as error:  # the run directory says how it ended, then the error goes on
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        run_failed(run, trainer, processes, status)
        raise
    return trainer


def diverged(
    run: RunDir, trainer: Trainer, processes: Processes, error: DivergedError
) -> DivergedError:
    """Mark the run diverged in run.json, with the step and its last (finite) checkpoint, and
    the error that says so."""
    kept = latest_valid_checkpoint(run.checkpoints)
    if processes.is_main:
        run.update_info(
            status="diverged",
            steps=trainer.step,
            diverged_at=error.step,
            last_finite_checkpoint=None if kept is None else kept.path.name,
        )
    where = (
        f"; its last finite checkpoint, {kept.path.name}, is kept (iclab eval {run.path} "
        "evaluates it)"
        if kept is not None
        else "; no checkpoint had been saved"
    )
    return DivergedError(f"{run.path}: {error}{where}", error.step)


def disk_full(run: RunDir, trainer: Trainer, error: OSError) -> DiskFullError:
    """The one message a full disk gives: what stopped where, and how to continue."""
    kept = latest_valid_checkpoint(run.checkpoints)
    writing = f" writing {error.filename}" if error.filename else ""
    since = f"its last checkpoint, {kept.path.name}" if kept else "the start"
    return DiskFullError(
        f"no space left on the device{writing}: {run.path} stopped at step {trainer.step}; free "
        f"some space, then `iclab train --resume {run.path}` continues from {since}"
    )


def run_failed(run: RunDir, trainer: Trainer, processes: Processes, status: str) -> None:
    """Say in run.json how the training ended, where the disk still lets it be said."""
    if processes.is_main:
        with suppress(OSError):
            run.update_info(status=status, steps=trainer.step)
