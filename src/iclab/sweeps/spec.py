"""The sweep file: read and validate it (every field path checked against the config schema
before any trial runs), expand it into a fixed list of named trial configs, and say what its
metric measures. Nothing here trains or needs Ray."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from iclab.config import (
    ConfigError,
    RunConfig,
    Strict,
    TaskConfig,
    apply_overrides,
    build_config,
    describe_validation_error,
    parse_override,
    resolve_config_path,
)
from iclab.io import read_yaml
from iclab.metrics import METRICS
from iclab.tasks import TASKS

MAX_SUFFIX = 60  # characters of parameter values in a trial's name


class Distribution(Strict):
    """A random-search parameter: ``loguniform`` and ``uniform`` draw a float in [low, high),
    ``randint`` an integer in [low, high) (as numpy and Ray Tune do)."""

    distribution: Literal["loguniform", "uniform", "randint"]
    low: float
    high: float

    @field_validator("high")
    @classmethod
    def _above_low(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if low is not None and not low < high:
            raise ValueError(f"high ({high}) must be above low ({low})")
        return high

    def check(self) -> None:
        """Rules that depend on the distribution (pydantic has checked low < high)."""
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got {self.low})")
        if self.distribution == "randint" and not (
            self.low.is_integer() and self.high.is_integer()
        ):
            raise ValueError(f"randint needs integer low and high (got {self.low}, {self.high})")

    def sample(self, rng: np.random.Generator) -> float | int:
        if self.distribution == "randint":
            return int(rng.integers(int(self.low), int(self.high)))
        if self.distribution == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


class SweepSpec(Strict):
    """A sweep file (``iclab.sweeps`` has an example); unknown keys are rejected."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base: str = Field(description="preset name or config path (relative to the sweep file)")
    set: list[str] = Field(default_factory=list, description="overrides for every trial")
    search: Literal["grid", "random"] = "grid"
    samples: int = Field(1, ge=1, description="random: trials; grid: repeats of the grid")
    seed: int = Field(0, description="random search seed")
    parameters: dict[str, list[Any] | Distribution] = Field(min_length=1)
    metric: Literal["headline", "loss"] = "headline"
    mode: Literal["min", "max"] | None = None
    max_concurrent: int | None = Field(None, ge=1, description="trials at once (default: CPUs)")
    cpus_per_trial: int = Field(1, ge=1)
    gpus_per_trial: float = Field(
        0.0, ge=0.0, description="GPUs Ray reserves per trial (0: trials see no GPU)"
    )
    _source: Path = PrivateAttr(default=Path("sweep"))

    @field_validator("parameters", mode="before")
    @classmethod
    def _values_or_distribution(cls, parameters: Any) -> Any:
        if not isinstance(parameters, dict):
            return parameters
        for path, values in parameters.items():
            if isinstance(values, dict):
                try:
                    Distribution.model_validate(values).check()
                except ValidationError as error:
                    raise ValueError(describe_validation_error(error, path)) from None
                except ValueError as error:
                    raise ValueError(f"{path}: {error}") from None
            elif not isinstance(values, list) or not values:
                raise ValueError(
                    f"{path}: give a non-empty list of values, or (random search) "
                    "{distribution: loguniform|uniform|randint, low: ..., high: ...}"
                )
        return parameters

    @field_validator("parameters")
    @classmethod
    def _fit_search(cls, parameters: dict, info: ValidationInfo) -> dict:
        if info.data.get("search") == "grid":
            for path, values in parameters.items():
                if isinstance(values, Distribution):
                    raise ValueError(
                        f"{path}: a {values.distribution} distribution needs search: random; "
                        "a grid takes a list of values"
                    )
        if "name" in parameters:
            raise ValueError("name: every trial is named after its parameters; sweep others")
        return parameters

    @property
    def source(self) -> Path:
        """The sweep file this spec was read from (relative base paths are relative to it)."""
        return self._source


@dataclass(frozen=True)
class Trial:
    """One point of the sweep: its name, parameter values and the config they give, or, when
    that config does not validate, why (``problem``)."""

    index: int
    name: str
    values: dict[str, Any]
    overrides: list[str]
    config: RunConfig | None
    problem: str | None = None


# --- the sweep file ---------------------------------------------------------------------------


def load_sweep(path: Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and validate a sweep file, with ``overrides`` added to its ``set``; every problem is
    a ``ConfigError`` naming file and field. Parameter and ``set`` paths are checked against the
    config schema here, before any trial."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no sweep file {path}")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sweep fields")
    if overrides:
        data["set"] = [*(data.get("set") or []), *overrides]
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, str(path))) from None
    spec._source = path
    base = base_data(spec)
    try:
        set_paths = [".".join(parse_override(text)[0]) for text in spec.set]
        base = apply_overrides(base, spec.set)
    except ConfigError as error:
        raise ConfigError(f"{path}: set: {error}") from None
    task_names = {str(base.get("task", {}).get("name", default_task()))}
    swept_tasks = spec.parameters.get("task.name")
    if isinstance(swept_tasks, list):
        task_names |= {str(name) for name in swept_tasks}
    for set_path in set_paths:
        try:
            check_field_path(set_path, task_names)
        except ConfigError as error:
            raise ConfigError(f"{path}: set: {error}") from None
    for parameter in spec.parameters:
        try:
            check_field_path(parameter, task_names)
        except ConfigError as error:
            raise ConfigError(f"{path}: parameters: {error}") from None
    return spec


def default_task() -> str:
    return TaskConfig.model_fields["name"].default


def check_field_path(path: str, task_names: set[str]) -> None:
    """Raise ``ConfigError`` unless ``path`` (``train.lr``) names a field of ``RunConfig``, or a
    task option of one of ``task_names``' families."""
    schema: type[BaseModel] = RunConfig
    keys = path.split(".")
    for depth, key in enumerate(keys):
        where = ".".join(keys[:depth]) or "the config"
        fields = schema.model_fields
        if key not in fields:
            options = {
                option
                for name in task_names
                if name in TASKS
                for option in TASKS.get(name).Options.model_fields
            }
            if schema is TaskConfig and depth == len(keys) - 1 and key in options:
                return
            known = sorted(fields) + (sorted(options) if schema is TaskConfig else [])
            raise ConfigError(f"{path}: {where} has no field {key!r} (fields: {', '.join(known)})")
        nested = section_model(fields[key].annotation)
        if nested is None and depth < len(keys) - 1:
            raise ConfigError(f"{path}: {'.'.join(keys[: depth + 1])} is a value, not a section")
        schema = nested or schema


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``Ramp | None`` → ``Ramp``), or None for a value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for member in getattr(annotation, "__args__", ()):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def base_data(spec: SweepSpec) -> dict[str, Any]:
    """The base config as a dict: a path relative to the sweep file, or a preset name."""
    relative = spec.source.parent / spec.base
    try:
        path = resolve_config_path(relative if relative.exists() else spec.base)
        data = read_yaml(path)
    except ConfigError as error:
        raise ConfigError(f"{spec.source}: base: {error}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{spec.source}: base: {path} is not a mapping of config sections")
    return data


# --- trials -----------------------------------------------------------------------------------


def expand_trials(spec: SweepSpec) -> list[Trial]:
    """Every trial of the sweep, in a stable order: the grid with the first parameter varying
    slowest (repeat r of a grid trains with ``train.seed`` + r), or ``samples`` random draws
    from a generator seeded with ``seed``."""
    base = base_data(spec)
    keys = short_keys(list(spec.parameters))
    trials = []
    for index, (values, repeat) in enumerate(parameter_values(spec)):
        suffix = "-".join(f"{keys[path]}{value_text(value)}" for path, value in values.items())
        name = f"trial-{index:03d}-{suffix[:MAX_SUFFIX]}".rstrip("-_.")
        if spec.search == "grid" and spec.samples > 1:
            name += f"-r{repeat}"
        overrides = [f"{path}={yaml_value(value)}" for path, value in values.items()]
        overrides.append(f"name={name}")
        trials.append(build_trial(index, name, values, base, [*spec.set, *overrides], repeat))
    return trials


def parameter_values(spec: SweepSpec) -> Iterator[tuple[dict[str, Any], int]]:
    """(parameter values, repeat) for every trial."""
    paths = list(spec.parameters)
    if spec.search == "grid":
        for repeat in range(spec.samples):
            for combination in itertools.product(*spec.parameters.values()):
                yield dict(zip(paths, combination, strict=True)), repeat
        return
    rng = np.random.default_rng(spec.seed)
    for _ in range(spec.samples):
        values = {}
        for path, choices in spec.parameters.items():
            if isinstance(choices, Distribution):
                values[path] = choices.sample(rng)
            else:
                values[path] = choices[int(rng.integers(len(choices)))]
        yield values, 0


def build_trial(
    index: int,
    name: str,
    values: dict[str, Any],
    base: dict[str, Any],
    overrides: list[str],
    repeat: int,
) -> Trial:
    """Validate one trial's config; a config that does not validate gives an invalid trial."""
    source = "trial config"
    try:
        config = build_config(base, overrides, source=source)
        if repeat:
            repeat_seed = f"train.seed={config.train.seed + repeat}"
            config = build_config(config.to_dict(), [repeat_seed], source=source)
            overrides = [*overrides, repeat_seed]
    except ConfigError as error:
        lines = str(error).splitlines()
        problem = "; ".join(line.removeprefix(f"{source}: ") for line in lines)
        return Trial(index, name, values, overrides, None, problem)
    resolved = config.to_dict()
    validated = {path: value_at(resolved, path, values[path]) for path in values}
    return Trial(index, name, validated, overrides, config)


def value_at(data: dict[str, Any], path: str, default: Any) -> Any:
    """The value at a dotted path of a config dict (as validated: ``"1e-3"`` became 0.001)."""
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def short_keys(paths: Sequence[str]) -> dict[str, str]:
    """The shortest tail of each path that no other path ends with: ``train.lr`` → ``lr``, but
    ``train.seed`` and ``eval.seed`` keep their sections."""
    keys = {}
    for path in paths:
        parts = path.split(".")
        for length in range(1, len(parts) + 1):
            tail = ".".join(parts[-length:])
            others = [other for other in paths if other != path]
            if not any(other == tail or other.endswith("." + tail) for other in others):
                break
        keys[path] = tail.replace(".", "_")
    return keys


def value_text(value: Any) -> str:
    """A value in a few filesystem-safe characters: 3e-04, 0.5, 1.2e05, 64, true, softmax."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        if value == 0 or 1e-2 <= abs(value) < 1e4:
            text = f"{value:.3g}"
        else:
            mantissa, exponent = f"{value:.2e}".split("e")
            text = f"{mantissa.rstrip('0').rstrip('.')}e{exponent.lstrip('+')}"
    elif isinstance(value, int | str):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def yaml_value(value: Any) -> str:
    """A value as override text that YAML reads back as the same value (PyYAML reads ``1e-05``
    as a string, ``1.0e-05`` as a float)."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        mantissa, marker, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if marker and "." not in mantissa else text
    return json.dumps(value)


# --- the metric -------------------------------------------------------------------------------


def metric_sense(spec: SweepSpec, trials: Sequence[Trial]) -> tuple[str, str, str]:
    """(what the metric measures, its label, min or max): from the task kind of the valid
    trials for ``headline``; the training loss is minimised."""
    if spec.metric == "loss":
        return "loss", "final training loss", spec.mode or "min"
    kinds = {TASKS.get(trial.config.task.name).kind for trial in trials if trial.config}
    metrics = {METRICS[kind] for kind in kinds}
    if len({metric.name for metric in metrics}) > 1:
        raise ConfigError(
            f"{spec.source}: metric: headline compares error with accuracy across these tasks; "
            "sweep tasks of one kind, or use metric: loss"
        )
    if not metrics:
        return "error", "headline", spec.mode or "min"
    metric = metrics.pop()
    mode = spec.mode or ("max" if metric.higher_is_better else "min")
    return metric.name, f"{metric.label} at the largest k", mode
