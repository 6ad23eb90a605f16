"""Crash-safe checkpoints: safetensors + JSON, written atomically, verified on load.

A checkpoint is a directory ``step-000500/`` holding ``model.safetensors``,
``optimizer.safetensors`` and ``meta.json`` (step, config, random states, versions and the
SHA-256 of each tensor file). It is assembled in a hidden temporary directory and renamed into
place, so a crash leaves either a whole checkpoint or none (and the next save removes what a
killed one left). Verifying checks the meta against its schema and its directory's step, the
checksums and the safetensors headers; loading checks every tensor's name and shape against the
model and optimizer before reading one. Nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from iclab.errors import UserError
from iclab.io import fsync_directory

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "meta.json"
PICKLE_SIGNATURES = {b"\x80": "a Python pickle", b"PK": "a zip archive (torch.save format)"}
STAGING_PREFIXES = (".step-", ".retired.")  # hidden directories of saves in progress


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, corrupted or unsafe to load."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / META_FILE).read_text())


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile`` / DDP wrappers, so saved names carry no prefixes."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class RngStates(BaseModel):
    model_config = ConfigDict(strict=True)

    torch: str
    cuda: list[str] | None = None


class OptimizerRest(BaseModel):
    """What of an optimizer's state is not a tensor (``optimizer_to_flat``)."""

    model_config = ConfigDict(strict=True)

    param_groups: list[dict[str, Any]]
    scalars: dict[str, dict[str, Any]]


class CheckpointMeta(BaseModel):
    """The schema of meta.json, checked before any of it is used (other keys: the config,
    versions, the caller's own)."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: int = Field(ge=1, le=FORMAT_VERSION)
    step: int = Field(ge=0)
    rng: RngStates
    optimizer: OptimizerRest | None
    sha256: dict[str, str]


# --- optimizer state as flat tensors + JSON -----------------------------------------------------


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], rest: dict) -> dict[str, Any]:
    """Inverse of ``optimizer_to_flat``: a state dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, entries in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}


# --- random states --------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Global torch random states (dropout etc.); batches do not need them (see ``seeding``)."""
    encode = lambda state: base64.b64encode(state.numpy().tobytes()).decode()  # noqa: E731
    states = {"torch": encode(torch.get_rng_state())}
    if torch.cuda.is_available():
        states["cuda"] = [encode(state) for state in torch.cuda.get_rng_state_all()]
    return states


def restore_rng_state(states: dict[str, Any]) -> None:
    decode = lambda text: torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)  # noqa: E731
    torch.set_rng_state(decode(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([decode(state) for state in states["cuda"]])


# --- saving ---------------------------------------------------------------------------------------


def save_checkpoint(
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    keep: int | None = None,
) -> Checkpoint:
    """Write ``directory/step-XXXXXXX`` atomically, then keep only the newest ``keep``. What
    an earlier save killed midway left (its hidden staging directory) is removed first: the one
    process that trains a run is the one that saves."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_staging(directory)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{checkpoint_name(step)}."))
    try:
        files = {
            MODEL_FILE: {k: v.detach().contiguous() for k, v in unwrap(model).state_dict().items()}
        }
        optimizer_rest = None
        if optimizer is not None:
            files[OPTIMIZER_FILE], optimizer_rest = optimizer_to_flat(optimizer)
        checksums = {}
        for filename, tensors in files.items():
            save_file(tensors, str(staging / filename))
            checksums[filename] = sha256(staging / filename)
        full_meta = {
            "format": FORMAT_VERSION,
            "step": step,
            **meta,
            "rng": capture_rng_state(),
            "optimizer": optimizer_rest,
            "sha256": checksums,
        }
        (staging / META_FILE).write_text(json.dumps(full_meta, indent=2))
        fsync_directory(staging)
        target = directory / checkpoint_name(step)
        if target.exists():  # re-saving a step after a resume: swap, never delete first
            retired = Path(tempfile.mkdtemp(dir=directory, prefix=".retired."))
            target.rename(retired / target.name)
            staging.rename(target)
            shutil.rmtree(retired)
        else:
            staging.rename(target)
        fsync_directory(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if keep is not None:
        for old in list_checkpoints(directory)[:-keep]:
            shutil.rmtree(old.path)
    return Checkpoint(target, step)


def remove_staging(directory: Path) -> None:
    """Remove the hidden directories of saves that never finished."""
    for path in directory.iterdir():
        if path.is_dir() and path.name.startswith(STAGING_PREFIXES):
            shutil.rmtree(path, ignore_errors=True)


# --- loading --------------------------------------------------------------------------------------


def list_checkpoints(directory: Path) -> list[Checkpoint]:
    """Checkpoint directories by step, oldest first (not yet verified)."""
    if not directory.exists():
        return []
    found = []
    for path in directory.iterdir():
        name, _, step = path.name.partition("-")
        if path.is_dir() and name == "step" and step.isdigit():
            found.append(Checkpoint(path, int(step)))
    return sorted(found, key=lambda checkpoint: checkpoint.step)


def check_safetensors_file(path: Path) -> None:
    """Refuse anything that is not a well-formed safetensors file, pickles in particular."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte header length, then the JSON header
        (header_size,) = struct.unpack("<Q", head[:8])
        if 8 + header_size <= path.stat().st_size:
            return
    # Not safetensors. (A header length can begin with a pickle's byte, so look only now.)
    for signature, what in PICKLE_SIGNATURES.items():
        if head.startswith(signature):
            raise CheckpointError(f"{path} is {what}; iclab never unpickles files")
    if len(head) < 9:
        raise CheckpointError(f"{path} is truncated ({len(head)} bytes)")
    raise CheckpointError(f"{path} is not a valid safetensors file")


def verify_checkpoint(
    checkpoint: Checkpoint,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """The checkpoint's meta after checking it against its schema and its directory's step,
    every file it lists as present, well-formed and intact, and (given ``model``) every tensor's
    name and shape against ``model`` and ``optimizer``. A model that does not fit is a
    ``CheckpointMismatchError``: the config changed, not the checkpoint."""
    meta_path = checkpoint.path / META_FILE
    try:
        meta = CheckpointMeta.model_validate_json(meta_path.read_bytes())
    except OSError as error:
        raise CheckpointError(f"{meta_path} is missing or unreadable: {error}") from None
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        raise CheckpointError(f"{meta_path}: {where}: {problem['msg']}") from None
    if meta.step != checkpoint.step:
        raise CheckpointError(f"{meta_path} says step {meta.step} in {checkpoint.path.name}")
    expected = {MODEL_FILE} | ({OPTIMIZER_FILE} if meta.optimizer is not None else set())
    if set(meta.sha256) != expected:
        raise CheckpointError(f"{meta_path} lists {sorted(meta.sha256)}, not {sorted(expected)}")
    for filename, checksum in meta.sha256.items():
        path = checkpoint.path / filename
        if not path.exists():
            raise CheckpointError(f"{path} is missing")
        check_safetensors_file(path)
        if sha256(path) != checksum:
            raise CheckpointError(f"{path} does not match its checksum (corrupted)")
    if model is not None:
        check_model_fits(checkpoint, model)
    if optimizer is not None:
        check_optimizer_fits(checkpoint, meta, optimizer)
    return meta.model_dump()


class CheckpointMismatchError(CheckpointError):
    """A checkpoint of another architecture than the config's model."""


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape in a safetensors file, from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except SafetensorError as error:
        raise CheckpointError(f"{path}: {error}") from None


def check_model_fits(checkpoint: Checkpoint, model: nn.Module) -> None:
    """A ``CheckpointMismatchError`` naming the tensors whose names or shapes differ."""
    expected = {name: tuple(t.shape) for name, t in unwrap(model).state_dict().items()}
    saved = tensor_shapes(checkpoint.path / MODEL_FILE)
    problems = [
        f"{name}: saved {saved.get(name)}, model {shape}"
        for name, shape in expected.items()
        if saved.get(name) != shape
    ]
    problems += [f"{name}: saved, not in the model" for name in saved.keys() - expected.keys()]
    if problems:
        raise CheckpointMismatchError(
            f"{checkpoint.path} does not fit this config's model: a run's architecture cannot "
            f"change when it resumes ({'; '.join(sorted(problems)[:3])})"
        )


def check_optimizer_fits(
    checkpoint: Checkpoint, meta: CheckpointMeta, optimizer: torch.optim.Optimizer
) -> None:
    """A ``CheckpointError`` unless the saved optimizer state has ``optimizer``'s groups and
    each of its tensors a parameter of that shape (a step count: any shape torch keeps)."""
    if meta.optimizer is None:
        raise CheckpointError(f"{checkpoint.path} holds no optimizer state")
    groups = meta.optimizer.param_groups
    if [len(g.get("params", ())) for g in groups] != [
        len(g["params"]) for g in optimizer.param_groups
    ]:
        raise CheckpointError(f"{checkpoint.path}: the optimizer state's parameter groups differ")
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for name, shape in tensor_shapes(checkpoint.path / OPTIMIZER_FILE).items():
        prefix, index, key = [*name.split(".", 2), "", ""][:3]
        if prefix != "state" or not index.isdigit() or int(index) >= len(parameters):
            raise CheckpointError(
                f"{checkpoint.path}: optimizer tensor {name!r} is for no parameter"
            )
        if key != "step" and shape != tuple(parameters[int(index)].shape):
            raise CheckpointError(
                f"{checkpoint.path}: optimizer tensor {name} has shape {shape}, its parameter "
                f"{tuple(parameters[int(index)].shape)}"
            )


def latest_valid_checkpoint(
    directory: Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Checkpoint | None:
    """The newest checkpoint that verifies (``verify_checkpoint``); broken newer ones are
    skipped with a warning. One that does not fit ``model`` is an error, never skipped: an
    older checkpoint of the same run would not fit either."""
    for checkpoint in reversed(list_checkpoints(directory)):
        try:
            verify_checkpoint(checkpoint, model, optimizer)
        except CheckpointMismatchError:
            raise
        except CheckpointError as error:
            warnings.warn(f"skipping checkpoint {checkpoint.path.name}: {error}", stacklevel=2)
            continue
        return checkpoint
    return None


def read_tensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    check_safetensors_file(path)
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_checkpoint(
    checkpoint: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Load weights (and optimizer state) in place once ``verify_checkpoint`` has checked that
    every tensor fits; returns the meta."""
    meta = verify_checkpoint(checkpoint, model, optimizer)
    try:
        unwrap(model).load_state_dict(read_tensors(checkpoint.path / MODEL_FILE, device))
        if optimizer is not None:
            tensors = read_tensors(checkpoint.path / OPTIMIZER_FILE, device)
            optimizer.load_state_dict(optimizer_from_flat(tensors, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as error:  # what the checks cannot see
        reason = " ".join(line.strip() for line in str(error).strip().splitlines()[:3])
        raise CheckpointError(f"{checkpoint.path} cannot be loaded: {reason}") from None
    return meta
