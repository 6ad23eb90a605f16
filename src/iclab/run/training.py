"""Train a run directory: check everything first, then write."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from iclab.config import RunConfig, TrainConfig
from iclab.devices import set_threads
from iclab.errors import RunExistsError
from iclab.run.directory import RunDir
from iclab.run.log import StepCallback, TrainingLog
from iclab.training.checkpoint import latest_valid_checkpoint
from iclab.training.distributed import join_processes
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
    it, so a config that does not fit the run leaves the directory as it was. Under torchrun
    every process calls this; only rank 0 writes. ``threads`` sets torch's CPU threads (for
    the whole process; 1 suits several trainings sharing a few cores).
    """
    set_threads(threads)
    processes = join_processes()
    run = RunDir(Path(run_dir))
    console = console or Console(stderr=True)
    if run.exists() and not resume:
        raise RunExistsError(
            f"{run.path} already holds a run; continue it with `iclab train --resume {run.path}` "
            "or choose another --out"
        )
    config = with_batch_shards(config, processes.world_size)
    trainer = Trainer(config, processes)
    config = trainer.config  # precision auto: fixed to what this device runs fast
    checkpoint = latest_valid_checkpoint(run.checkpoints) if resume else None
    if checkpoint is not None:
        meta = trainer.load(checkpoint)
        if trainer.step >= config.train.steps:
            console.print(
                f"{run.path} has trained {trainer.step} of {config.train.steps} steps: nothing "
                "to train (raise train.steps to continue, e.g. --set "
                f"train.steps={2 * config.train.steps})",
                soft_wrap=True,
            )
            return trainer
        warn_about_the_schedule(meta, config, trainer.step)
    shortfall = curriculum_shortfall(config)
    if shortfall is not None and processes.is_main:
        warnings.warn(shortfall, stacklevel=2)
    processes.barrier()  # every process has checked before the first one writes
    if processes.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config)
        run.truncate_metrics(trainer.step)
        if resume:
            console.print(
                f"resuming {run.path} from step {trainer.step}"
                if checkpoint is not None
                else f"[yellow]no valid checkpoint in {run.path}; starting from step 0",
                soft_wrap=True,
            )
    log = TrainingLog(trainer, run, console, show_progress, on_step) if processes.is_main else None
    try:
        with log or nullcontext():
            trainer.fit(log)
    except BaseException as error:  # the run directory says how it ended, then the error goes on
        if processes.is_main:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            run.update_info(status=status, steps=trainer.step)
        raise
    return trainer
