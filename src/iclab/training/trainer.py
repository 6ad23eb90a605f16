"""The meta-training loop: sample a batch of prompts, predict every target, step; the run layer
(``iclab.run``) decides where checkpoints and logs go."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from iclab.config import RunConfig, TrainConfig
from iclab.devices import (
    keep_freed_memory,
    release_freed_memory,
    resolve_device,
    resolve_precision,
)
from iclab.episode import Episode, concatenate
from iclab.errors import ConfigError, DivergedError
from iclab.evaluation.curves import mean_score_at
from iclab.kinds import kind_of
from iclab.metrics import loss_share, training_loss
from iclab.models import build_model
from iclab.optim import adamw
from iclab.seeding import derive_seed, generator_for
from iclab.tasks.base import Task
from iclab.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from iclab.training.distributed import Processes
from iclab.training.schedule import (
    CurriculumState,
    curriculum_at,
    curriculum_complete,
    learning_rate,
)


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


class TrainingHooks(Protocol):
    """What the training loop tells its observer (the run layer's log on the main process)."""

    def logged(self, step: int, loss: float, used: dict[str, float]) -> None:
        """Every ``train.log_every`` steps and the last: the loss averaged over processes."""

    def advanced(self, step: int) -> None:
        """After every step."""

    def checkpoint(self, step: int) -> None:
        """Every ``train.checkpoint_every`` steps and the last: save the state now."""

    def checked(self, step: int, score: float, reached: bool) -> None:
        """At a checkpoint with ``train.stop_at``, once the curriculum is complete: the model's
        score and whether it reached the target (training then stops)."""


class Trainer:
    """Meta-trains the model a ``RunConfig`` describes; writes nothing itself (the run layer
    saves checkpoints and logs through ``TrainingHooks``).

    Step ``s`` (0-based) trains on the batch drawn from ``(seed, "train", s)`` (shard by shard:
    ``sample_batch``); learning rate and curriculum are functions of ``s``. So resuming from
    a checkpoint reproduces the uninterrupted run bitwise on the same machine, and any number of
    processes dividing the batch size trains on the same batches.
    """

    def __init__(self, config: RunConfig, processes: Processes | None = None) -> None:
        self.processes = processes or Processes()
        self.device = resolve_device(config.train.device, self.processes.local_rank)
        self.config = config = with_precision(config, self.device)
        if self.device.type == "cuda":  # TF32 matmuls: float32 range, 10-bit mantissa
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:  # each step frees and allocates the same blocks again: keep them mapped
            keep_freed_memory()
        self.task = config.task.build()
        torch.manual_seed(derive_seed(config.train.seed, "init"))
        self.model = build_model(
            config.model, self.task.io(), config.task.n_points, name=config.name
        ).to(self.device)
        train = config.train
        self.optimizer = adamw(
            parameter_groups(self.model, train.weight_decay), lr=train.lr, betas=train.betas
        )
        self.network = self._trainable(self.model)
        self.step = 0
        self.bad_steps = 0  # non-finite steps in a row, skipped so far
        self.stopped: dict[str, Any] | None = None  # train.stop_at's target reached: where, how

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

    # --- state --------------------------------------------------------------------------------

    def load(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """Continue from ``checkpoint``: weights, optimizer state, random states and step; returns
        its meta. A checkpoint whose tensors do not fit this config's model is a
        ``CheckpointError``."""
        meta = load_checkpoint(checkpoint, self.model, self.optimizer, self.device)
        restore_rng_state(meta["rng"])
        self.step = meta["step"]
        stopped, stop = meta.get("stopped"), self.config.train.stop_at
        if stopped and stop and stopped["k"] == stop.k and self.reaches_target(stopped["score"]):
            self.stopped = stopped  # and stays stopped, unless the target moved out of reach
        return meta

    def save(self, directory: Path, meta: dict[str, Any]) -> Checkpoint:
        """A checkpoint of the current step in ``directory`` (the newest
        ``train.keep_checkpoints`` are kept), with ``meta`` and the config."""
        return save_checkpoint(
            directory,
            self.step,
            self.model,
            self.optimizer,
            {"config": self.config.to_dict(), **meta}
            | ({"stopped": self.stopped} if self.stopped else {}),
            keep=self.config.train.keep_checkpoints,
        )

    # --- stopping at a target ------------------------------------------------------------------

    def reaches_target(self, score: float) -> bool:
        """Whether ``score`` meets ``train.stop_at``'s target (False without one)."""
        stop = self.config.train.stop_at
        if stop is None:
            return False
        if kind_of(self.task.kind).metric.higher_is_better:
            return score >= stop.target
        return score <= stop.target

    def check_target(self, hooks: TrainingHooks | None) -> None:
        """At a checkpoint: score the model for ``train.stop_at`` once the curriculum has
        reached the task's full size, and record where the target was reached. The prompts
        come from a stream of their own and the global random state is untouched, so checking
        changes nothing of the training itself."""
        stop, config = self.config.train.stop_at, self.config
        if stop is None or not curriculum_complete(config, self.step - 1):
            return
        seed = derive_seed(config.train.seed, "stop_at")
        score = mean_score_at(
            self.model,
            self.task,
            config.task.n_points,
            stop.n_prompts,
            config.eval.batch_size,
            seed,
            stop.k,
            self.device,
        )
        if math.isnan(score):
            raise ConfigError(
                f"train.stop_at.k ({stop.k}): the task scores no prediction after {stop.k} "
                "examples; choose a scored position"
            )
        score = self.processes.mean(torch.tensor(score, device=self.device)).item()
        reached = self.reaches_target(score)
        if reached:
            self.stopped = {
                "step": self.step,
                "k": stop.k,
                "metric": kind_of(self.task.kind).metric.name,
                "score": score,
                "target": stop.target,
            }
        if hooks is not None:
            hooks.checked(self.step, score, reached)

    # --- loop ---------------------------------------------------------------------------------

    def train_step(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimisation step on the batch of ``step``; returns this process's loss and what
        the step used. A step whose loss or gradient norm is not finite (on any process) makes
        no update; more than ``train.divergence_patience`` of them in a row is a
        ``DivergedError``."""
        train = self.config.train
        stage = curriculum_at(self.config, step)
        lr = learning_rate(train, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        episode = sample_batch(self.task, train, step, stage, self.processes, self.device)
        loss = self.forward_backward(episode)
        limit = math.inf if train.grad_clip is None else train.grad_clip  # inf: measure only
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit)
        if self.finite(loss + norm):
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            if self.bad_steps > train.divergence_patience:
                raise DivergedError(
                    f"training diverged: the loss ({loss.item():.4g}) or the gradient norm "
                    f"({norm.item():.4g}) was not finite for {self.bad_steps} steps in a row, "
                    f"up to step {step + 1}; lower train.lr (now {train.lr:g}) or raise "
                    "train.warmup_steps",
                    step + 1,
                )
        self.optimizer.zero_grad(set_to_none=True)
        return loss, {"lr": lr, "n_dims": stage.n_dims_active, "n_points": stage.n_points}

    def forward_backward(self, episode: Episode) -> torch.Tensor:
        """The batch's training loss, its gradient added to the parameters' ``.grad``.

        With ``train.micro_batches`` m > 1 the prompts go through in m parts, so only one
        part's activations are in memory at a time; each part's loss is weighted by its share
        of the positions the batch's loss averages over, which makes the summed gradient the
        whole batch's. DistributedDataParallel averages the gradients over the processes at the
        last part's backward only.
        """
        train = self.config.train
        last_only, bfloat16 = train.loss_on == "last", train.precision == "bfloat16"
        rows, parts = episode.batch_size, min(train.micro_batches, episode.batch_size)
        loss = torch.zeros((), device=self.device)
        for index in range(parts):
            part = episode.rows(rows * index // parts, rows * (index + 1) // parts)
            with self.gradients_averaged(index == parts - 1):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bfloat16):
                    prediction = self.network(part)
                share = loss_share(part, episode, last_only)
                part_loss = training_loss(prediction.float(), part, last_only) * share
                part_loss.backward()
            loss += part_loss.detach()
        return loss

    def gradients_averaged(self, average: bool) -> contextlib.AbstractContextManager:
        """Where backward averages the gradients over the processes (``average``) or only adds
        to this process's: DistributedDataParallel's ``no_sync``, for all micro-batches but
        the last; nothing to do in one process."""
        network = getattr(self.network, "_orig_mod", self.network)  # under torch.compile
        if average or not isinstance(network, DistributedDataParallel):
            return contextlib.nullcontext()
        return network.no_sync()

    def finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every process (so that all skip a step together)."""
        return self.processes.mean(value.detach().isfinite().float()).item() == 1.0

    def weights_finite(self) -> bool:
        """Whether every parameter is finite: a checkpoint is saved only then."""
        return all(parameter.isfinite().all() for parameter in self.model.parameters())

    def release_kept_memory(self) -> None:
        """On CPU, hand back the freed blocks ``keep_freed_memory`` keeps, for when the next
        steps allocate other sizes (on CUDA the host heap keeps glibc's own settings)."""
        if self.device.type == "cpu":
            release_freed_memory()

    def fit(self, hooks: TrainingHooks | None = None) -> None:
        """Train until ``train.steps``, or until ``train.stop_at``'s target is reached at a
        checkpoint, telling ``hooks`` (if any) what happens; every process runs the loop, and
        the processes meet at each checkpoint. Only finite weights are checkpointed: a
        ``DivergedError`` stops the loop first."""
        train = self.config.train
        shape = None
        while self.step < train.steps and self.stopped is None:
            stage = curriculum_at(self.config, self.step)
            if shape is not None and shape != (stage.n_dims_active, stage.n_points):
                self.release_kept_memory()  # the new stage's blocks have other sizes
            shape = (stage.n_dims_active, stage.n_points)
            loss, used = self.train_step(self.step)
            self.step += 1
            last = self.step == train.steps
            if self.step % train.log_every == 0 or last:
                value = self.processes.mean(loss).item()
                if hooks is not None:
                    hooks.logged(self.step, value, used)
            if hooks is not None:
                hooks.advanced(self.step)
            if self.step % train.checkpoint_every == 0 or last:
                if not self.weights_finite():  # a finite step to infinite weights (lr = inf)
                    raise DivergedError(
                        f"training diverged: the weights are not finite at step {self.step} "
                        f"(train.lr {train.lr:g}); nothing was saved of them",
                        self.step,
                    )
                self.check_target(hooks)
                if hooks is not None:
                    hooks.checkpoint(self.step)
                self.release_kept_memory()  # what the check and the save allocated
                self.processes.barrier()


def with_precision(config: RunConfig, device: torch.device) -> RunConfig:
    """The config with ``train.precision: auto`` fixed to what ``device`` runs fast, so that a
    run keeps its precision when it resumes elsewhere."""
    train = config.train
    precision = resolve_precision(train.precision, device)
    return config.model_copy(update={"train": train.model_copy(update={"precision": precision})})


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


def as_started_like(config: RunConfig, started: RunConfig) -> RunConfig:
    """``config`` with what training fixes when it starts (``train.batch_shards`` left to the
    process count, ``train.precision: auto``) taken from the saved config of a run that
    ``started``, so that the two compare field by field: whether that run is ``config``'s."""
    train, fixed = config.train, started.train
    update = {
        "batch_shards": train.batch_shards or fixed.batch_shards,
        "precision": fixed.precision if train.precision == "auto" else train.precision,
    }
    return config.model_copy(update={"train": train.model_copy(update=update)})
