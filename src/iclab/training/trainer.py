"""The meta-training loop: sample a batch of prompts, predict every target, step, log, save."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.utils.tensorboard import SummaryWriter

from iclab import catalog
from iclab.config import RunConfig
from iclab.io import atomic_write_text
from iclab.metrics import training_loss
from iclab.models import build_model
from iclab.run import RunDir, environment
from iclab.seeding import derive_seed, generator_for
from iclab.training.checkpoint import (
    latest_valid_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from iclab.training.schedule import curriculum_at, learning_rate
from iclab.training.tracking import open_tracker

StepCallback = Callable[[int, float], None]


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "train.device is 'cuda' but no CUDA device is available (use auto or cpu)"
        )
    return torch.device(name)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight matrices and embeddings decay; biases, norm scales and parameters a
    mixer marks ``_no_weight_decay`` (Mamba's A and D) do not, as in GPT-2 and Mamba. Without
    weight decay, one group (the layout of checkpoints written before the split)."""
    parameters = list(model.parameters())
    if weight_decay == 0:
        return [{"params": parameters, "weight_decay": 0.0}]

    def decays(parameter: torch.nn.Parameter) -> bool:
        return parameter.dim() >= 2 and not getattr(parameter, "_no_weight_decay", False)

    return [
        {"params": [p for p in parameters if decays(p)], "weight_decay": weight_decay},
        {"params": [p for p in parameters if not decays(p)], "weight_decay": 0.0},
    ]


class Trainer:
    """Meta-trains the model a ``RunConfig`` describes, in the run directory ``run``.

    Step ``s`` (0-based) trains on the batch drawn from ``(seed, "train", s)``; learning rate
    and curriculum are functions of ``s``. So resuming from a checkpoint reproduces the
    uninterrupted run bitwise on the same machine.
    """

    def __init__(self, config: RunConfig, run: RunDir, console: Console | None = None) -> None:
        self.config = config
        self.run = run
        self.console = console or Console(stderr=True)
        self.device = select_device(config.train.device)
        self.task = config.task.build()
        torch.manual_seed(derive_seed(config.train.seed, "init"))
        self.model = build_model(config.model, config.task, name=config.name).to(self.device)
        train = config.train
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, train.weight_decay), lr=train.lr, betas=train.betas
        )
        self.step = 0

    # --- state --------------------------------------------------------------------------------

    def resume(self) -> bool:
        """Continue from the newest valid checkpoint; False when there is none."""
        checkpoint = latest_valid_checkpoint(self.run.checkpoints)
        if checkpoint is None:
            self._truncate_metrics(0)
            return False
        meta = load_checkpoint(checkpoint, self.model, self.optimizer, self.device)
        restore_rng_state(meta["rng"])
        self.step = meta["step"]
        self._truncate_metrics(self.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after ``step`` by the interrupted run (they will be redone)."""
        kept = [row for row in self.run.read_metrics() if row["step"] <= step]
        atomic_write_text(self.run.metrics_path, "".join(json.dumps(row) + "\n" for row in kept))

    def save(self) -> None:
        meta = {"config": self.config.to_dict(), "environment": environment()}
        save_checkpoint(
            self.run.checkpoints,
            self.step,
            self.model,
            self.optimizer,
            meta,
            keep=self.config.train.keep_checkpoints,
        )

    # --- loop ---------------------------------------------------------------------------------

    def train_step(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimisation step on the batch of ``step``; returns the loss and what it used."""
        train = self.config.train
        stage = curriculum_at(self.config, step)
        lr = learning_rate(train, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        generator = generator_for(train.seed, "train", step, device=self.device)
        episode = self.task.sample(
            train.batch_size, stage.n_points, generator, n_dims_active=stage.n_dims_active
        )
        loss = training_loss(self.model(episode), episode)
        loss.backward()
        if train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, {"lr": lr, "n_dims": stage.n_dims_active, "n_points": stage.n_points}

    def fit(self, show_progress: bool = True, on_step: StepCallback | None = None) -> None:
        """Train until ``train.steps``; ``on_step(step, loss)`` runs after every logged step."""
        train = self.config.train
        n_params = self.model.n_params()
        task = self.config.task
        sizes = (
            f"{task.n_points} tokens"
            if self.task.kind == "tokens"
            else f"d={task.n_dims}, {task.n_points} points"
        )
        model = self.config.model
        d_model = self.model.backbone.d_model
        fitted = "" if model.target_params is None else f" fitted to {model.target_params:,}"
        self.console.print(
            f"[bold]{self.config.name}[/]: {model.describe()} model, d_model={d_model}, "
            f"{n_params:,} parameters{fitted}, on {self.device}; task {task.name} ({sizes})"
        )
        self.run.update_info(
            created=self.run.read_info().get("created") or datetime.now(UTC).isoformat(),
            status="running",
            pid=os.getpid(),  # so that `iclab runs` can tell a run whose process died
            host=socket.gethostname(),
            config_hash=self.config.digest(),
            n_params=n_params,
            d_model=d_model,
            device=str(self.device),
            environment=environment(),
        )
        catalog.record(self.run.path)
        tracker = open_tracker(self.config, self.run)  # ends its run as the loop ends
        writer = SummaryWriter(str(self.run.tensorboard_dir), purge_step=self.step)
        started, start_step = time.perf_counter(), self.step
        progress = Progress(
            TextColumn("[bold blue]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} steps/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not show_progress,
        )
        with progress, self.run.metrics_path.open("a") as metrics, tracker or nullcontext():
            bar = progress.add_task(
                "train", total=train.steps, completed=self.step, loss="-", rate="-"
            )
            while self.step < train.steps:
                loss, used = self.train_step(self.step)
                self.step += 1
                if self.step % train.log_every == 0 or self.step == train.steps:
                    value = loss.item()
                    rate = (self.step - start_step) / (time.perf_counter() - started)
                    row = {
                        "step": self.step,
                        "loss": value,
                        **used,
                        "time": round(time.perf_counter() - started, 3),
                    }
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    scalars = {
                        "train/loss": value,
                        **{f"train/{name}": amount for name, amount in used.items()},
                    }
                    for tag, scalar in scalars.items():
                        writer.add_scalar(tag, scalar, self.step)
                    if tracker is not None:
                        tracker.log_metrics(self.step, scalars)
                    progress.update(bar, loss=f"{value:.4f}", rate=f"{rate:.1f}")
                    if on_step is not None:
                        on_step(self.step, value)
                progress.update(bar, completed=self.step)
                if self.step % train.checkpoint_every == 0 or self.step == train.steps:
                    self.save()
        writer.close()
        elapsed, trained = time.perf_counter() - started, self.step - start_step
        timing = {"steps_per_second": round(trained / elapsed, 2)} if trained else {}
        self.run.update_info(status="completed", steps=self.step, **timing)


def train_run(
    config: RunConfig,
    run_dir: Path,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    on_step: StepCallback | None = None,
) -> Trainer:
    """Train a new run in ``run_dir`` or, with ``resume``, continue the one that is there."""
    run = RunDir(Path(run_dir))
    if run.exists() and not resume:
        raise FileExistsError(
            f"{run.path} already holds a run; continue it with `iclab train --resume {run.path}` "
            "or choose another --out"
        )
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    trainer = Trainer(config, run, console)
    if resume and trainer.resume():
        trainer.console.print(f"resuming {run.path} from step {trainer.step}")
    elif resume:
        trainer.console.print(f"[yellow]no valid checkpoint in {run.path}; starting from step 0")
    try:
        trainer.fit(show_progress=show_progress, on_step=on_step)
    except BaseException as error:  # the run directory says how it ended, then the error goes on
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        run.update_info(status=status, steps=trainer.step)
        raise
    finally:
        catalog.record(run.path)
    return trainer
