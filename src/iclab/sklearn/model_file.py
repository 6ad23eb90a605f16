"""A trained model as one safetensors file (or its bytes): the weights, with the run's config in
the file's metadata, so a model travels without its run directory and loads without pickle.

``iclab export RUN FILE`` writes one; the models bundled with iclab are such files; a pickled
estimator holds one as bytes. Nothing here calls ``torch.load``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load, save

from iclab.config import RunConfig, build_config
from iclab.errors import ConfigError, did_you_mean
from iclab.io import atomic_write_bytes
from iclab.models import InContextModel
from iclab.run import RunDir, load_trained_model
from iclab.tasks import Task

CONFIG_KEY = "iclab.config"
FORMAT_KEY = "iclab.format"
FORMAT = "iclab-model-1"
BUNDLED_DIR = Path(__file__).parent / "bundled"
SUFFIX = ".safetensors"


@dataclass
class TrainedModel:
    """A trained model with the config it was trained by (task, model, training)."""

    config: RunConfig
    model: InContextModel

    @functools.cached_property
    def task(self) -> Task:
        return self.config.task.build()

    def to_bytes(self) -> bytes:
        tensors = {
            name: value.detach().cpu().contiguous()
            for name, value in self.model.state_dict().items()
        }
        metadata = {FORMAT_KEY: FORMAT, CONFIG_KEY: json.dumps(self.config.to_dict())}
        return save(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "model file") -> TrainedModel:
        try:
            metadata = read_metadata(data)
            tensors = load(data)
        except (SafetensorError, ValueError, json.JSONDecodeError) as error:
            raise ConfigError(f"{source} is not a safetensors model file: {error}") from None
        if metadata.get(FORMAT_KEY) != FORMAT or CONFIG_KEY not in metadata:
            raise ConfigError(
                f"{source} is a safetensors file but not an iclab model (made by iclab export)"
            )
        config = build_config(json.loads(metadata[CONFIG_KEY]), source=f"{source} (config)")
        model = config.build_model()
        try:
            model.load_state_dict(tensors)
        except RuntimeError as error:
            reason = " ".join(str(error).split())[:300]
            raise ConfigError(f"{source}: weights do not fit its config: {reason}") from None
        return cls(config, model.eval())


def read_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file's header (8-byte length, then JSON)."""
    if len(data) < 8:
        raise ValueError("too short")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(data[8 : 8 + length])
    return header.get("__metadata__", {}) if isinstance(header, dict) else {}


def bundled_names() -> list[str]:
    """The models shipped with iclab (``InContextRegressor(run=NAME)``)."""
    return sorted(path.stem for path in BUNDLED_DIR.glob(f"*{SUFFIX}"))


def load_trained(run: str | Path) -> TrainedModel:
    """A run directory's newest checkpoint, a model file, or a bundled model by name."""
    path = Path(run)
    if path.is_dir():
        if not (path / "config.yaml").exists():
            raise ConfigError(f"{path} is a directory but not an iclab run (no config.yaml)")
        return TrainedModel(RunDir(path).load_config(), load_trained_model(path))
    if path.is_file():
        return TrainedModel.from_bytes(path.read_bytes(), source=str(path))
    if str(run) in bundled_names():
        bundled = BUNDLED_DIR / f"{run}{SUFFIX}"
        return TrainedModel.from_bytes(bundled.read_bytes(), source=f"bundled model {run}")
    hint = did_you_mean(str(run), bundled_names(), most=1)
    raise ConfigError(
        f"run={str(run)!r} is neither a run directory, a model file nor a bundled model{hint} "
        f"(bundled: {', '.join(bundled_names()) or 'none'})"
    )


def export_model(run: str | Path, destination: str | Path) -> Path:
    """Write a run's newest checkpoint as one model file (atomically)."""
    destination = Path(destination)
    if destination.suffix != SUFFIX:
        destination = destination.with_name(destination.name + SUFFIX)
    atomic_write_bytes(destination, load_trained(run).to_bytes())
    return destination
