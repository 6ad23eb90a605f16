"""Crash-safe checkpoints: safetensors + JSON, written atomically, verified on load.

A checkpoint is a directory ``step-000500/`` holding ``model.safetensors``,
``optimizer.safetensors`` and ``meta.json`` (step, config, random states, versions and the
SHA-256 of each tensor file). It is assembled in a hidden temporary directory and renamed into
place, so a crash leaves either a whole checkpoint or none. Loading checks the checksums and the
safetensors header before reading a tensor, and nothing is ever unpickled.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from iclab.errors import UserError
from iclab.io import fsync_directory

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "meta.json"
PICKLE_SIGNATURES = {b"\x80": "a Python pickle", b"PK": "a zip archive (torch.save format)"}


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
    """Write ``directory/step-XXXXXXX`` atomically, then keep only the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
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


def verify_checkpoint(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's meta after checking every file is present, well-formed and intact."""
    meta_path = checkpoint.path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{meta_path} is missing or unreadable: {error}") from None
    for filename, expected in meta.get("sha256", {}).items():
        path = checkpoint.path / filename
        if not path.exists():
            raise CheckpointError(f"{path} is missing")
        check_safetensors_file(path)
        if sha256(path) != expected:
            raise CheckpointError(f"{path} does not match its checksum (corrupted)")
    if MODEL_FILE not in meta.get("sha256", {}):
        raise CheckpointError(f"{meta_path} lists no {MODEL_FILE}")
    return meta


def latest_valid_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies; broken newer ones are skipped with a warning."""
    for checkpoint in reversed(list_checkpoints(directory)):
        try:
            verify_checkpoint(checkpoint)
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
    """Load weights (and optimizer state) in place after verification; returns the meta."""
    meta = verify_checkpoint(checkpoint)
    try:
        unwrap(model).load_state_dict(read_tensors(checkpoint.path / MODEL_FILE, device))
        if optimizer is not None:
            tensors = read_tensors(checkpoint.path / OPTIMIZER_FILE, device)
            optimizer.load_state_dict(optimizer_from_flat(tensors, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as error:  # tensors of another model's shapes
        reason = str(error).strip().splitlines()
        raise CheckpointError(
            f"{checkpoint.path} does not fit this config's model (was the model changed?): "
            + " ".join(line.strip() for line in reason[:3])
        ) from None
    return meta
