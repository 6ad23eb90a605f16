"""The experiment schema: one run = task + model + training + evaluation.

Configs come from YAML files or Python, are validated by pydantic (unknown keys are rejected),
and accept dotted overrides such as ``train.steps=2000``. Every error names the field, the bad
value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from iclab.algorithms import ALGORITHM_SPEC, ALGORITHMS
from iclab.algorithms.base import check_applies
from iclab.errors import (
    ConfigError,
    UserError,
    did_you_mean,
    limit_note,
    within_size_limit,
)
from iclab.evaluation.shifts import build_shift, resolve_shifts
from iclab.io import YAML_MAX_DEPTH, parse_yaml, plain_copy, read_yaml
from iclab.kinds import TaskIO
from iclab.models import InContextModel, ModelConfig, build_model
from iclab.models.caches import POLICY_SPEC
from iclab.registry import UnknownNameError
from iclab.specs import resolve_spec
from iclab.tasks import TASKS, make_task

PRESETS_DIR = Path(__file__).parent / "configs"
# Task sizes refused before the task is built unless ICLAB_NO_SIZE_LIMITS=1
# (``iclab.errors.within_size_limit``).
MAX_DIMS = 1024
MAX_POINTS = 100_000
RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def at_most(limit: int) -> AfterValidator:
    """A field's size limit (``within_size_limit``), for ``Annotated[int, at_most(N)]``."""
    return AfterValidator(lambda value: within_size_limit(value, limit))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class TaskConfig(BaseModel):
    """Which task family, its size, and the family's own options (checked against the family)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = "linear_regression"
    n_dims: Annotated[int, at_most(MAX_DIMS)] | None = Field(
        None,
        ge=1,
        description="input dimension (default: the family's; token tasks ignore it); "
        + limit_note(MAX_DIMS),
    )
    n_points: Annotated[int, at_most(MAX_POINTS)] | None = Field(
        None,
        ge=2,
        description="examples (tokens) per prompt (default: the family's); "
        + limit_note(MAX_POINTS),
    )

    @field_validator("name")
    @classmethod
    def _registered_task(cls, name: str) -> str:
        try:
            TASKS.get(name)
        except UnknownNameError as error:  # a ValueError, so pydantic names the field
            raise ValueError(str(error)) from None
        return name

    @model_validator(mode="after")
    def _check_family_options(self) -> TaskConfig:
        family = TASKS.get(self.name)
        try:
            family.Options.model_validate(self.model_extra or {})
        except ValidationError as error:
            message = describe_validation_error(error, f"options of {self.name}", family.Options)
            raise ValueError(message) from None
        if self.n_dims is None:
            self.n_dims = family.default_n_dims
        if self.n_points is None:
            self.n_points = family.default_n_points
        return self

    def build(self):
        """The ``Task`` this config describes."""
        return make_task(self.name, self.n_dims, self.options)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def io(self) -> TaskIO:
        """What a model needs to know of this task's examples."""
        return self.build().io()


class Ramp(Strict):
    """A quantity that starts at ``start`` and grows by ``increment`` every ``interval`` steps."""

    start: int = Field(ge=1)
    end: int = Field(ge=1)
    increment: int = Field(1, ge=1)
    interval: int = Field(2000, ge=1)

    def value_at(self, step: int) -> int:
        return min(self.end, self.start + self.increment * (step // self.interval))

    @model_validator(mode="after")
    def _start_not_above_end(self) -> Ramp:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) must not exceed end ({self.end})")
        return self


class CurriculumConfig(Strict):
    """Garg et al.'s curriculum: active input dims and prompt length grow during training."""

    dims: Ramp | None = None
    points: Ramp | None = None


class StopConfig(Strict):
    """Stop training once the model has learned in context: at each checkpoint after the
    curriculum has reached the task's full size, the model is scored after ``k`` in-context
    examples on ``n_prompts`` fresh prompts (a stream of their own, disjoint from training and
    evaluation), and training stops when the mean reaches ``target`` (at most it for an error
    or regret, at least it for an accuracy)."""

    k: int = Field(ge=0, description="in-context examples before the scored query")
    target: float = Field(
        description="the metric to reach: error / E[y²] (regression), accuracy (classification, "
        "tokens) or regret (decisions)"
    )
    n_prompts: int = Field(1280, ge=2, description="prompts each check scores")


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainConfig(Strict):
    steps: int = Field(5000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(
        1e-4,
        gt=0.0,
        description="Adam's peak learning rate; in a run config, auto: the rate a sweep chose for "
        "the model's mixer on the quickstart task (iclab models; a hybrid's smallest), written "
        "into the run's config.yaml as the number",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[Beta, Beta] = Field(
        (0.9, 0.999), description="AdamW's decay rates of its moment estimates, each in [0, 1)"
    )
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine floor as a share of lr")
    decay_steps: int | None = Field(
        None,
        ge=1,
        description="steps the cosine decays over (default: steps); after them the learning "
        "rate stays at its floor, so a finished run can be extended without the rate jumping up",
    )
    grad_clip: float | None = Field(1.0, gt=0.0)
    loss_on: Literal["all", "last"] = Field(
        "all",
        description="the predictions trained on: all (every prefix of the prompt, Garg et al.) "
        "or last (only the last example's: von Oswald et al.'s one query after a fixed "
        "context); a task's own loss mask applies within either",
    )
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "float32",
        description="bfloat16: forward and backward under bf16 autocast (weights and optimizer "
        "state stay float32); auto: bfloat16 where the hardware multiplies it fast (CPUs with "
        "AVX-512-BF16 or AMX, GPUs with bf16), float32 elsewhere, fixed in the run's config when "
        "it starts; on CUDA, float32 matmuls use TF32 either way",
    )
    compile: bool = Field(
        False, description="torch.compile the model for training (checkpoints stay portable)"
    )
    batch_shards: int | None = Field(
        None,
        ge=1,
        description="the batch of step s is this many shards, shard i drawn from (seed, s, i), "
        "so any number of processes dividing the batch trains on the same batches (default: "
        "the number of processes the run starts with, each then draws only its own shards)",
    )
    micro_batches: int = Field(
        1,
        ge=1,
        description="forward and backward each step's batch in this many parts of its prompts, "
        "their gradients summed: the whole batch's update (up to float rounding) with one "
        "part's activations in memory at a time, for slower steps (smaller matmuls, more of "
        "them)",
    )
    stop_at: StopConfig | None = Field(
        None,
        description="stop before train.steps once the model reaches a target at a checkpoint, "
        "e.g. {k: 10, target: 0.04} (the schedule still spans train.steps)",
    )
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    divergence_patience: int = Field(
        3,
        ge=0,
        description="steps in a row whose loss or gradients are not finite that are skipped "
        "(no update) before the run stops as diverged; 0 stops at the first",
    )

    @field_validator("lr", mode="before")
    @classmethod
    def _number_or_auto(cls, lr: Any) -> Any:
        """``auto`` left here found no mixer to ask (``RunConfig`` resolves it)."""
        if lr == "auto":
            raise ValueError("auto takes the rate of the model's mixer: it needs a run config")
        if isinstance(lr, str) and not is_number(lr):
            raise ValueError(f"a number or auto, got {lr!r}")
        return lr

    @model_validator(mode="after")
    def _shards_divide_batch(self) -> TrainConfig:
        if self.batch_shards is not None and self.batch_size % self.batch_shards:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be a multiple of "
                f"train.batch_shards ({self.batch_shards})"
            )
        if self.micro_batches > self.batch_size:
            raise ValueError(
                f"train.micro_batches ({self.micro_batches}) splits the batch's prompts: at "
                f"most train.batch_size ({self.batch_size})"
            )
        return self


class EvalConfig(Strict):
    n_prompts: int = Field(1280, ge=2)
    batch_size: int = Field(256, ge=1)
    seed: int = 1
    streaming: bool = Field(
        False,
        description="predict token by token through each mixer's recurrent form (a KV cache "
        "for softmax attention): the same numbers, memory flat in context length for "
        "recurrent mixers",
    )
    caches: list[POLICY_SPEC] = Field(
        default_factory=list,
        description="KV-cache policies, e.g. snapkv(budget=64): the model is also evaluated "
        "token by token with its attention caches kept by each (iclab caches lists them)",
    )
    algorithms: list[ALGORITHM_SPEC] | None = Field(
        None,
        description="algorithm specs such as knn(k=5) (default: the task family's yardsticks)",
    )
    shifts: list[str] = Field(
        default_factory=list,
        description="distribution shifts evaluated besides the training distribution, e.g. "
        "scale_inputs(factor=2), or all (iclab shifts lists them)",
    )
    n_points: Annotated[int, at_most(MAX_POINTS)] | None = Field(
        None,
        ge=1,
        description="examples per evaluation prompt (default task.n_points); more than trained "
        "tests length generalisation; " + limit_note(MAX_POINTS),
    )
    reference: str | None = Field(
        None,
        description="learner the others are compared with prompt by prompt (default: the first "
        "algorithm)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where models and algorithms run (auto: the GPU when there is one)"
    )
    task_options: dict[str, Any] = Field(
        default_factory=dict,
        description="task options that differ at evaluation, e.g. {mode: icl} for "
        "bursty_classification's novel-class prompts: prompts come from the trained family "
        "and size with these options changed (the training config is not)",
    )

    @field_validator("caches")
    @classmethod
    def _distinct_caches(cls, specs: list[Any]) -> list[Any]:
        names = [str(spec) for spec in specs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"cache policy given twice: {', '.join(repeated)}")
        return specs

    @field_validator("shifts")
    @classmethod
    def _canonical_shifts(cls, specs: list[str]) -> list[str]:
        """Each shift in its canonical text (``all`` stays: which of them apply depends on the
        task, checked with it)."""
        return [spec if spec == "all" else build_shift(spec).spec for spec in specs]

    @model_validator(mode="after")
    def _canonical_reference(self) -> EvalConfig:
        """A reference written as an algorithm spec, in the canonical text its learner is named
        by (``ridge(alpha=2.0)`` is ``ridge(alpha=2)``); other names (``model``) as given."""
        if self.reference is not None and self.reference not in ("model",):
            try:
                canonical = str(resolve_spec(self.reference, ALGORITHMS, "algorithm"))
            except UserError:
                return self
            object.__setattr__(self, "reference", canonical)
        return self


class MlflowConfig(Strict):
    """Where the trainer also logs params, metrics and status, besides TensorBoard."""

    tracking_uri: str = Field(
        min_length=1,
        description="MLflow store, e.g. sqlite:///runs/mlflow.db (relative to the working "
        "directory) or http://host:5000",
    )
    experiment: str = Field("iclab", min_length=1, description="MLflow experiment name")


class LoggingConfig(Strict):
    mlflow: MlflowConfig | None = Field(
        None, description="also log to MLflow (needs iclab[mlflow]); off by default"
    )


class RunConfig(Strict):
    name: str = Field("run", pattern=RUN_NAME)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="experiment trackers besides TensorBoard"
    )

    @model_validator(mode="before")
    @classmethod
    def _tuned_learning_rate(cls, data: Any) -> Any:
        """``train.lr: auto`` becomes the number the mixers' sweep chose, so that the run's
        config.yaml (and its digest) says what was trained with. A model section with errors
        has no rate to give: ``lr`` is left out so that only the model's own errors are shown."""
        train = data.get("train") if isinstance(data, dict) else None
        if isinstance(train, dict) and train.get("lr") == "auto":
            try:
                lr = ModelConfig.model_validate(data.get("model") or {}).tuned_learning_rate()
            except ValidationError:
                return {**data, "train": {k: v for k, v in train.items() if k != "lr"}}
            data = {**data, "train": {**train, "lr": lr}}
        return data

    @model_validator(mode="after")
    def _curriculum_fits_task(self) -> RunConfig:
        curriculum = self.train.curriculum
        for field, ramp, limit in (
            ("dims", curriculum.dims, self.task.n_dims),
            ("points", curriculum.points, self.task.n_points),
        ):
            if ramp is not None and ramp.end > limit:
                raise ValueError(
                    f"train.curriculum.{field}.end ({ramp.end}) exceeds task.n_{field} ({limit})"
                )
        return self

    @model_validator(mode="after")
    def _stop_fits_task(self) -> RunConfig:
        stop = self.train.stop_at
        if stop is not None and stop.k >= self.task.n_points:
            raise ValueError(
                f"train.stop_at.k ({stop.k}) must be below task.n_points "
                f"({self.task.n_points}): a prompt scores its queries after 0 to "
                f"{self.task.n_points - 1} examples"
            )
        return self

    @model_validator(mode="after")
    def _evaluation_fits_task(self) -> RunConfig:
        """The task can be built, with ``eval.task_options`` too, and the shifts and algorithms
        apply to the evaluation task (default algorithms: its yardsticks)."""
        try:
            self.task.build()
        except UserError as error:
            raise ValueError(f"task: {error}") from None
        try:
            task = self.evaluation_task().build()
        except (UserError, ValueError) as error:
            raise ValueError(f"eval.task_options: {error}") from None
        try:
            resolve_shifts(self.eval.shifts, task)
        except UserError as error:
            raise ValueError(f"eval.shifts: {error}") from None
        if self.eval.algorithms is None:
            self.eval.algorithms = list(TASKS.get(self.task.name).yardsticks)
        for spec in self.eval.algorithms:
            try:
                check_applies(spec, task)
            except UserError as error:
                raise ValueError(f"eval.algorithms: {error}") from None
        return self

    def evaluation_task(self) -> TaskConfig:
        """The task evaluation samples from: the trained one with ``eval.task_options``."""
        if not self.eval.task_options:
            return self.task
        fixed = sorted({"name", "n_dims", "n_points"} & self.eval.task_options.keys())
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)} cannot change at evaluation: a model reads the family and "
                "width it was trained on (eval.n_points sets the prompt length)"
            )
        try:
            return TaskConfig.model_validate({**self.task.model_dump(), **self.eval.task_options})
        except ValidationError as error:  # the family's own message, without pydantic's frame
            messages = (item["msg"].removeprefix("Value error, ") for item in error.errors())
            raise ValueError("; ".join(messages)) from None

    def build_model(self, name: str = "model") -> InContextModel:
        """The (freshly initialised) model this config trains, sized for its task."""
        return build_model(self.model, self.task.io(), self.task.n_points, name=name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def updated(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` merged in and validated again: sections as dicts of the fields
        that change (``config.updated(name="long", train={"steps": 6000})``), so experiments are
        built in Python the way a config file would write them."""
        return build_config(merged(self.to_dict(), changes), source=f"{self.name} updated")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """A short hash of the resolved config, stored in run metadata; tracker settings, which
        do not change results, are left out."""
        canonical = json.dumps(self.model_dump(mode="json", exclude={"logging"}), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, section by section (a copy; dicts merge, other values
    replace)."""
    result = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=2000"`` → ``(["train", "steps"], 2000)``; the value is parsed as YAML."""
    key, sep, raw_value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.field=value")
    path = key.strip().split(".")
    if len(path) > YAML_MAX_DEPTH:
        raise ConfigError(f"override {text!r}: more than {YAML_MAX_DEPTH} dotted keys")
    return path, parse_yaml(raw_value, f"override {text!r}: value")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); unknown keys are caught by validation. A
    dotted key into a null field makes it a section: ``train.stop_at.k=10`` fills a preset's
    ``stop_at: null``."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, key in enumerate(path[:-1]):
            if node.get(key) is None:  # absent, or an optional section left null (stop_at)
                node[key] = {}
            child = node[key]
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"override {text!r}: {where} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def describe_validation_error(
    error: ValidationError,
    source: str,
    schema: type[BaseModel] | None = None,
    overrides: Sequence[str] = (),
) -> str:
    """One line per problem: ``source: field.path: message (got value)``; an unknown key gets
    the nearest fields of ``schema`` as suggestions, and a problem with a field an override set
    names that override as its source (``--set train.step=3``), not the file."""
    lines = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        where = ".".join(location) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key" + suggestion(location, schema)
        got = "" if problem["type"] == "missing" else f" (got {shortened(problem['input'])})"
        if problem["type"] == "extra_forbidden" or isinstance(problem["input"], dict):
            got = ""
        if repr(problem.get("input")) in message:  # a spec's message quotes it already
            got = ""
        lines.append(f"{source_of(location, source, overrides)}: {where}: {message}{got}")
    return "\n".join(lines)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def shortened(value: Any, width: int = 80) -> str:
    """``repr(value)``, cut to ``width`` characters: a message quotes a huge value in part."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def suggestion(location: list[str], schema: type[BaseModel] | None) -> str:
    """``; did you mean train.steps?`` for the unknown key at ``location`` of ``schema``."""
    section = schema
    for key in location[:-1]:
        field = section.model_fields.get(key) if section is not None else None
        section = section_model(getattr(field, "annotation", None))
    if section is None:
        return ""
    prefix = ".".join(location[:-1])
    return did_you_mean(
        location[-1], section.model_fields, written=lambda key: f"{prefix}.{key}" if prefix else key
    )


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds: its model, also where the field may be null
    (``stop_at: StopConfig | None``); None for a plain value."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def source_of(location: list[str], source: str, overrides: Sequence[str]) -> str:
    """The override that set ``location`` (or a section above it), else ``source``."""
    for text in reversed(overrides):
        path = text.partition("=")[0].strip().split(".")
        if location[: len(path)] == path or path[: len(location)] == location:
            return f"--set {text}"
    return source


def build_config(
    data: dict[str, Any], overrides: Sequence[str] = (), source: str = "config"
) -> RunConfig:
    """Validate a config dict after applying overrides; raise ``ConfigError`` with clear lines
    (for any ``data``: values other than plain data are errors too)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(plain_copy(data, source), list(overrides))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        message = describe_validation_error(error, source, RunConfig, overrides)
        raise ConfigError(message) from None


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a preset shipped with iclab (e.g. ``quickstart``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    hint = did_you_mean(str(name_or_path), presets)
    raise ConfigError(
        f"no config file {str(path)!r} and no preset of that name{hint} "
        f"(presets: {', '.join(presets)})"
    )


def load_config(name_or_path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Load a YAML config file (or preset), apply dotted overrides and validate."""
    path = resolve_config_path(name_or_path)
    data = read_yaml(path)
    data = {} if data is None else data
    if isinstance(data, dict):
        data.setdefault("name", name_from_stem(path.stem))
    config = build_config(data, overrides, source=str(path))
    check_reference(config, source_of(["eval", "reference"], str(path), overrides))
    return config


def name_from_stem(stem: str) -> str:
    """A run name from a config file's name: what a name may not hold becomes ``-``
    (``my config[2]`` → ``my-config-2``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-_.")
    return name if re.match(RUN_NAME, name) else "run"


def check_reference(config: RunConfig, source: str) -> None:
    """A ``ConfigError`` unless ``eval.reference`` names a learner the run's evaluation has: its
    model (``model``) or one of ``eval.algorithms``. Checked for a run's config, not in
    ``RunConfig``: comparisons name their models otherwise."""
    reference = config.eval.reference
    learners = ["model", *(str(spec) for spec in config.eval.algorithms)]
    if reference is not None and reference not in learners:
        raise ConfigError(
            f"{source}: eval.reference: {reference!r} is none of the run's learners "
            f"({', '.join(dict.fromkeys(learners))})"
        )
