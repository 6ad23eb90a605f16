"""The meta-training loop: sample a batch of prompts, predict every target, step, log, save."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from iclab import catalog
from iclab.config import ConfigError, RunConfig, TrainConfig
from iclab.episode import Episode, concatenate
from iclab.io import atomic_write_text
from iclab.metrics import training_loss
from iclab.models import build_model
from iclab.run import RunDir, environment
from iclab.seeding import derive_seed, generator_for
from iclab.tasks.base import Task
from iclab.training.checkpoint import (
    latest_valid_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from iclab.training.distributed import Processes, join_processes
from iclab.training.log import TrainingLog
from iclab.training.schedule import CurriculumState, curriculum_at, learning_rate

StepCallback = Callable[[int, float], None]


def select_device(name: str, processes: Processes | None = None) -> torch.device:
    """``train.device`` resolved; under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "train.device is 'cuda' but no CUDA device is available (use auto or cpu)"
        )
    if name == "cuda":
        return torch.device("cuda", (processes or Processes()).local_rank)
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


def sample_batch(
    task: Task,
    train: TrainConfig,
    step: int,
    stage: CurriculumState,
    processes: Processes,
    device: torch.device,
) -> Episode:
    """This process's rows of the batch of ``step``.

    The batch is ``train.batch_shards`` (S) shards, shard i drawn from ``(seed, "train", step,
    i)`` (with one shard, the whole batch from ``(seed, "train", step)``, as before sharding).
    Of W processes, rank r trains on rows r·B/W to (r+1)·B/W − 1 of it, drawing the shards that
    hold them: its own shards when W divides S, the whole batch when S = 1 (sampling is a small
    share of a step). So the batches are the same for any W dividing the batch size.
    """
    shards, world = train.batch_shards or 1, processes.world_size
    shard_size, rows = train.batch_size // shards, train.batch_size // world
    start = processes.rank * rows
    first, last = start // shard_size, (start + rows - 1) // shard_size
    parts = []
    for shard in range(first, last + 1):
        keys = ("train", step) if shards == 1 else ("train", step, shard)
        generator = generator_for(train.seed, *keys, device=device)
        parts.append(task.sample(shard_size, stage.n_points, generator, stage.n_dims_active))
    offset = start - first * shard_size
    return concatenate(parts).rows(offset, offset + rows)


class Trainer:
    """Meta-trains the model a ``RunConfig`` describes, in the run directory ``run``.

    Step ``s`` (0-based) trains on the batch drawn from ``(seed, "train", s)`` (shard by shard:
    ``sample_batch``); learning rate and curriculum are functions of ``s``. So resuming from
    a checkpoint reproduces the uninterrupted run bitwise on the same machine, and any number of
    processes dividing the batch size trains on the same batches.
    """

    def __init__(
        self,
        config: RunConfig,
        run: RunDir,
        console: Console | None = None,
        processes: Processes | None = None,
    ) -> None:
        self.config = config
        self.run = run
        self.console = console or Console(stderr=True)
        self.processes = processes or Processes()
        self.device = select_device(config.train.device, self.processes)
        if self.device.type == "cuda":  # TF32 matmuls: float32 range, 10-bit mantissa
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.task = config.task.build()
        torch.manual_seed(derive_seed(config.train.seed, "init"))
        self.model = build_model(config.model, config.task, name=config.name).to(self.device)
        train = config.train
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, train.weight_decay),
            lr=train.lr,
            betas=train.betas,
            fused=self.device.type == "cuda",  # one kernel for all parameters; same state
        )
        self.network = self._trainable(self.model)
        self.step = 0

    def _trainable(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the loop calls: the model, wrapped for data parallelism and compiled as asked.
        Checkpoints save ``self.model`` itself, so parameter names never carry the wrappers'
        ``module.`` or ``_orig_mod.`` prefixes."""
        network = model
        if self.processes.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            network = DistributedDataParallel(model, device_ids=device_ids)
        if self.config.train.compile:
            network = torch.compile(network)
        return network

    @property
    def tokens_per_step(self) -> int:
        """Tokens of the global batch at full-size prompts."""
        tokens = self.model.codec.tokens_per_example * self.config.task.n_points
        return self.config.train.batch_size * tokens

    def describe(self) -> str:
        """The line the trainer announces a run with."""
        n_params, task, model = self.model.n_params(), self.config.task, self.config.model
        sizes = (
            f"{task.n_points} tokens"
            if self.task.kind == "tokens"
            else f"d={task.n_dims}, {task.n_points} points"
        )
        fitted = "" if model.target_params is None else f" fitted to {model.target_params:,}"
        where = f"{self.device}, {self.config.train.precision}"
        if self.processes.distributed:
            where += f", {self.processes.world_size} processes"
        return (
            f"[bold]{self.config.name}[/]: {model.describe()} model, "
            f"d_model={self.model.backbone.d_model}, {n_params:,} parameters{fitted}, on {where}; "
            f"task {task.name} ({sizes})"
        )

    # --- state --------------------------------------------------------------------------------

    def resume(self) -> bool:
        """Continue from the newest valid checkpoint; False when there is none."""
        checkpoint = latest_valid_checkpoint(self.run.checkpoints)
        if checkpoint is None:
            if self.processes.is_main:
                self._truncate_metrics(0)
            return False
        meta = load_checkpoint(checkpoint, self.model, self.optimizer, self.device)
        restore_rng_state(meta["rng"])
        self.step = meta["step"]
        if self.processes.is_main:
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
        """One optimisation step on the batch of ``step``; returns this process's loss and what
        the step used."""
        train = self.config.train
        stage = curriculum_at(self.config, step)
        lr = learning_rate(train, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        episode = sample_batch(self.task, train, step, stage, self.processes, self.device)
        bfloat16 = train.precision == "bfloat16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            prediction = self.network(episode)
        loss = training_loss(prediction.float(), episode)
        loss.backward()  # DistributedDataParallel averages the gradients over the processes
        if train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, {"lr": lr, "n_dims": stage.n_dims_active, "n_points": stage.n_points}

    def fit(self, show_progress: bool = True, on_step: StepCallback | None = None) -> None:
        """Train until ``train.steps``; ``on_step(step, loss)`` runs after every logged step
        (the loss averaged over the processes)."""
        train = self.config.train
        log = TrainingLog(self, show_progress) if self.processes.is_main else None
        with log or nullcontext():
            while self.step < train.steps:
                loss, used = self.train_step(self.step)
                self.step += 1
                if self.step % train.log_every == 0 or self.step == train.steps:
                    value = self.processes.mean(loss).item()
                    if log is not None:
                        log.record(self.step, value, used)
                    if on_step is not None:
                        on_step(self.step, value)
                if log is not None:
                    log.advance(self.step)
                if self.step % train.checkpoint_every == 0 or self.step == train.steps:
                    if self.processes.is_main:
                        self.save()
                    self.processes.barrier()


def with_batch_shards(config: RunConfig, world_size: int) -> RunConfig:
    """The config with ``train.batch_shards`` fixed (default: the number of processes the run
    starts with, so each draws only its own shards), checked against the processes now."""
    train = config.train
    if train.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size ({train.batch_size}) must be a multiple of the number of "
            f"processes ({world_size}), which train on equal parts of it"
        )
    shards = train.batch_shards or world_size
    return config.model_copy(update={"train": train.model_copy(update={"batch_shards": shards})})


def train_run(
    config: RunConfig,
    run_dir: Path,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    on_step: StepCallback | None = None,
) -> Trainer:
    """Train a new run in ``run_dir`` or, with ``resume``, continue the one that is there. Under
    torchrun every process calls this; only rank 0 writes the run directory."""
    processes = join_processes()
    run = RunDir(Path(run_dir))
    if run.exists() and not resume:
        raise FileExistsError(
            f"{run.path} already holds a run; continue it with `iclab train --resume {run.path}` "
            "or choose another --out"
        )
    config = with_batch_shards(config, processes.world_size)
    processes.barrier()  # every process has looked before the first one writes
    if processes.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config)
    trainer = Trainer(config, run, console, processes)
    resumed = resume and trainer.resume()
    processes.barrier()
    if processes.is_main and resume:
        trainer.console.print(
            f"resuming {run.path} from step {trainer.step}"
            if resumed
            else f"[yellow]no valid checkpoint in {run.path}; starting from step 0"
        )
    try:
        trainer.fit(show_progress=show_progress, on_step=on_step)
    except BaseException as error:  # the run directory says how it ended, then the error goes on
        if processes.is_main:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            run.update_info(status=status, steps=trainer.step)
        raise
    finally:
        if processes.is_main:
            catalog.record(run.path)
    return trainer
