"""What the main process writes while a run trains: run.json's status, metrics.jsonl,
checkpoints, TensorBoard, MLflow (when configured) and the progress bar. The trainer computes
and tells this log (its ``TrainingHooks``) what happened; this writes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from iclab.devices import describe_peak_memory, peak_memory_mb, reset_peak_memory
from iclab.kinds import kind_of
from iclab.metrics import target_reached
from iclab.progress import progress
from iclab.run.directory import RunDir, environment, metrics_line
from iclab.run.tracking import open_tracker
from iclab.training.flops import peak_flops, training_flops_per_step
from iclab.training.trainer import Trainer

StepCallback = Callable[[int, float], None]
STAGE_KEYS = (("n_dims", "d"), ("n_points", "n"))  # the curriculum's stage, as the bar shows it


def describe(trainer: Trainer) -> str:
    """The line a run is announced with: model, size, device and task."""
    config, model = trainer.config, trainer.model
    task, model_config = config.task, config.model
    sizes = kind_of(trainer.task.kind).describe_sizes(task.n_dims, task.n_points)
    fitted = (
        "" if model_config.target_params is None else f" fitted to {model_config.target_params:,}"
    )
    where = f"{trainer.device}, {config.train.precision}"
    if trainer.processes.distributed:
        where += f", {trainer.processes.world_size} processes"
    return (
        f"[bold]{config.name}[/]: {model_config.describe()} model, "
        f"d_model={model.backbone.d_model}, {model.n_params():,} parameters{fitted}, on {where}; "
        f"task {task.name} ({sizes})"
    )


class TrainingLog:
    """Opened around the training loop of the main process (``with TrainingLog(...) as log:
    trainer.fit(log)``).

    On entry it announces the run and marks it running; ``logged`` writes one logged step,
    ``checkpoint`` saves one; on a normal exit it marks the run completed with its throughput.
    A failure leaves the status to ``train_run``, which knows whether it was an interruption.
    """

    def __init__(
        self,
        trainer: Trainer,
        run: RunDir,
        console: Console,
        show_progress: bool = True,
        on_step: StepCallback | None = None,
    ) -> None:
        self.trainer = trainer
        self.run = run
        self.console = console
        self.show_progress = show_progress
        self.on_step = on_step
        self.stack = ExitStack()
        self.start_step = trainer.step
        self.started = time.perf_counter()

    def __enter__(self) -> TrainingLog:
        trainer, run = self.trainer, self.run
        self.console.print(describe(trainer), soft_wrap=True)
        run.update_info(
            created=run.read_info().get("created") or datetime.now(UTC).isoformat(),
            status="running",
            pid=os.getpid(),  # so that `iclab runs` can tell a run whose process died
            host=socket.gethostname(),
            config_hash=trainer.config.digest(),
            n_params=trainer.model.n_params(),
            d_model=trainer.model.backbone.d_model,
            device=str(trainer.device),
            precision=trainer.config.train.precision,
            processes=trainer.processes.world_size,
            environment=environment(),
        )
        tracker = open_tracker(trainer.config, run)
        if tracker is not None:
            self.stack.enter_context(tracker)  # FINISHED, FAILED or KILLED as the loop ends
        self.tracker = tracker
        from torch.utils.tensorboard import SummaryWriter  # slow to import; only when training

        self.writer = SummaryWriter(str(run.tensorboard_dir), purge_step=trainer.step)
        self.stack.callback(self.writer.close)
        self.metrics = self.stack.enter_context(run.metrics_path.open("a"))
        self.bar = self.stack.enter_context(
            progress(
                "train",
                trainer.config.train.steps,
                console=self.console,
                enabled=self.show_progress,
                fields=("loss", "steps/s", "speed", "stage"),
                completed=trainer.step,
            )
        )
        self.peak = peak_flops(trainer.device, trainer.config.train.precision)
        self.flops_by_points: dict[int, float] = {}  # FLOPs of a step, per curriculum length
        self.flops, self.last_step = 0.0, trainer.step
        self.last_loss: float | None = None
        reset_peak_memory(trainer.device)
        self.started = time.perf_counter()
        return self

    def step_flops(self, n_points: int) -> float:
        """Training FLOPs of one step at the current curriculum length (memoised)."""
        if n_points not in self.flops_by_points:
            batch_size = self.trainer.config.train.batch_size
            self.flops_by_points[n_points] = training_flops_per_step(
                self.trainer.model, batch_size, n_points
            )
        return self.flops_by_points[n_points]

    def throughput(self, elapsed: float) -> dict[str, float]:
        """Achieved TFLOP/s since the loop started and, with a known peak, the MFU."""
        achieved = self.flops / elapsed
        result = {"achieved_tflops": round(achieved / 1e12, 4)}
        if self.peak is not None:
            result["mfu"] = round(achieved / self.peak, 4)
        return result

    # --- TrainingHooks ----------------------------------------------------------------------

    def logged(self, step: int, loss: float, used: dict[str, Any]) -> None:
        """One logged step: a metrics.jsonl line, TensorBoard and MLflow scalars, the bar."""
        elapsed = time.perf_counter() - self.started
        row = {"step": step, "loss": loss, **used, "time": round(elapsed, 3)}
        self.last_loss = loss
        self.metrics.write(metrics_line(row))
        self.metrics.flush()
        scalars = {"train/loss": loss, **{f"train/{name}": value for name, value in used.items()}}
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        if self.tracker is not None:
            self.tracker.log_metrics(step, scalars)
        self.flops += (step - self.last_step) * self.step_flops(used["n_points"])
        self.last_step = step
        rate = (step - self.start_step) / elapsed
        throughput = self.throughput(elapsed)
        speed = f"{throughput['achieved_tflops'] * 1e3:.0f} GFLOP/s"
        if "mfu" in throughput:
            speed += f" MFU {throughput['mfu']:.0%}"
        stage = " ".join(f"{short}={used[key]}" for key, short in STAGE_KEYS if key in used)
        self.bar.update(loss=f"{loss:.4f}", speed=speed, stage=stage, **{"steps/s": f"{rate:.1f}"})
        if self.on_step is not None:
            self.on_step(step, loss)

    def advanced(self, step: int) -> None:
        self.bar.update(step)

    def checkpoint(self, step: int) -> None:
        self.trainer.save(self.run.checkpoints, {"environment": environment()})

    def checked(self, step: int, score: float, reached: bool) -> None:
        """A ``train.stop_at`` check: a TensorBoard scalar, and a line while the target is not
        reached (the one that reaches it ends the run: ``__exit__`` says so)."""
        stop = self.trainer.config.train.stop_at
        metric = kind_of(self.trainer.task.kind).metric.name
        self.writer.add_scalar(f"stop_at/{metric}_at_k{stop.k}", score, step)
        if not reached:
            last = step == self.trainer.config.train.steps
            self.console.print(
                f"step {step}: {metric} {score:.4g} after {stop.k} examples, not yet "
                f"{stop.target:g} (train.stop_at)"
                + (": the last step, short of the target" if last else ": training on"),
                highlight=False,
                soft_wrap=True,
            )

    # ---------------------------------------------------------------------------------------

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self.stack.__exit__(kind, *rest)
        if kind is not None:
            return
        trainer = self.trainer
        elapsed, trained = time.perf_counter() - self.started, trainer.step - self.start_step
        timing = {}
        if trained:
            timing["steps_per_second"] = round(trained / elapsed, 2)
            timing["tokens_per_second"] = round(trained * trainer.tokens_per_step / elapsed)
            if self.flops:  # from logged steps: up to log_every - 1 steps short
                timing.update(self.throughput(elapsed))
        memory = peak_memory_mb(trainer.device)
        self.run.update_info(
            status="completed",
            steps=trainer.step,
            stopped=trainer.stopped,
            flops_per_step=self.step_flops(trainer.config.task.n_points),
            **timing,
            **memory,
        )
        if self.last_loss is not None:
            self.console.print(
                f"{trainer.config.name}: trained to step {trainer.step}, loss "
                f"{self.last_loss:.4g} ({timing.get('steps_per_second', 0):g} steps/s"
                + (f", {describe_peak_memory(memory)})" if memory else ")"),
                highlight=False,
                soft_wrap=True,
            )
        if trainer.stopped is not None:
            early = trainer.config.train.steps - trainer.step
            self.console.print(
                f"{trainer.config.name} reached its target at step {trainer.step}: "
                f"{target_reached(trainer.stopped)} (train.stop_at)"
                + (f": stopped {early} steps early" if early else ""),
                highlight=False,
                soft_wrap=True,
            )
