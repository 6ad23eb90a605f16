"""The ``iclab`` command line."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from iclab.config import ConfigError, ModelConfig, RunConfig, load_config
from iclab.evaluation.curves import CurvePoint
from iclab.registry import UnknownNameError
from iclab.training.checkpoint import CheckpointError

app = typer.Typer(
    help="iclab: meta-train sequence models to learn in context, and measure them against the "
    "optimal and classical learning algorithms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)
USER_ERRORS = (
    ConfigError,
    CheckpointError,
    UnknownNameError,
    FileExistsError,
    FileNotFoundError,
    ValueError,
)


def user_errors_exit_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input prints one clear message and exits with status 2 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def show_warnings_briefly() -> None:
    warnings.showwarning = lambda message, category, *_: errors.print(
        f"[yellow]warning:[/] {message}", highlight=False
    )


def reported_ks(points: Sequence[CurvePoint], config: RunConfig) -> list[int]:
    """The prefix lengths the summary table shows: 1, d, 2d and the last for regression (where
    d examples make least squares exact), otherwise the first, ¼, ½ and last scored ones."""
    scored = sorted({p.k for p in points})
    if points and points[0].metric == "error":
        d = config.task.n_dims
        wanted = [1, d, 2 * d, scored[-1]]
    else:
        wanted = [scored[round(q * (len(scored) - 1))] for q in (0, 0.25, 0.5, 1)]
    return [k for k in dict.fromkeys(wanted) if k in scored]


def print_evaluation(points: Sequence[CurvePoint], config: RunConfig, run: Path | None) -> None:
    """Every learner's metric at a few prefix lengths, then where the files are."""
    from iclab.metrics import METRICS

    ks = reported_ks(points, config)
    metric = METRICS[config.task.build().kind]
    table = Table(title=f"{metric.label} after k in-context examples, ± 95% CI")
    table.add_column("learner", no_wrap=True)
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    for learner in dict.fromkeys(p.learner for p in points):
        by_k = {p.k: p for p in points if p.learner == learner}
        table.add_row(
            learner,
            *(f"{by_k[k].mean:.3f}±{by_k[k].mean - by_k[k].ci_low:.3f}" for k in ks),
        )
    console.print(table)
    if run is not None:
        console.print(
            f"\nrun directory: [bold]{run}[/]\n"
            f"  table: {run / 'eval' / 'curves.csv'}\n"
            f"  plot:  {run / 'plots' / 'curves.png'}"
        )


OverrideOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field, e.g. --set train.steps=2000."),
]


@app.command()
@user_errors_exit_cleanly
def train(
    config: Annotated[
        str | None, typer.Argument(help="YAML config file or preset name (e.g. quickstart).")
    ] = None,
    overrides: OverrideOption = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/NAME).")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this directory from its newest valid checkpoint."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Meta-train a model on an in-context task; writes a run directory."""
    from iclab.run import RunDir
    from iclab.training.trainer import train_run

    show_warnings_briefly()
    if resume is not None:
        if config is not None:
            raise ConfigError("give either CONFIG or --resume RUN_DIR, not both")
        run_config = RunDir(resume).load_config()
        if overrides:
            from iclab.config import build_config

            run_config = build_config(run_config.to_dict(), overrides, source=str(resume))
        run_dir = resume
    else:
        if config is None:
            raise ConfigError("give a CONFIG file or preset, or --resume RUN_DIR")
        run_config = load_config(config, overrides or [])
        run_dir = out or Path("runs") / run_config.name
    train_run(run_config, run_dir, resume=resume is not None, show_progress=progress)
    console.print(f"run directory: [bold]{run_dir}[/]")


@app.command("eval")
@user_errors_exit_cleanly
def eval_command(
    run: Annotated[
        Path | None, typer.Argument(help="Run directory (omit to evaluate algorithms alone).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="Without a RUN: the task family to evaluate the algorithms on."),
    ] = None,
    algorithms: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated algorithm specs, e.g. 'least_squares,knn(k=5)' "
            "(default: the run's eval.algorithms, or the task's yardsticks)."
        ),
    ] = None,
    overrides: OverrideOption = None,
    n_prompts: Annotated[
        int | None, typer.Option(help="Prompts to sample (default: config).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Without a RUN: directory for curves.csv and curves.png."),
    ] = None,
) -> None:
    """Evaluate a run and its algorithms on the same fresh prompts, or, with --task, the
    algorithms alone (the yardsticks a model will be measured against)."""
    from iclab.config import build_config
    from iclab.evaluation.run_eval import evaluate_learners, evaluate_run, write_evaluation
    from iclab.run import RunDir
    from iclab.specs import split_specs

    show_warnings_briefly()
    specs = None if algorithms is None else split_specs(algorithms)
    if run is not None:
        if task is not None or out is not None:
            raise ConfigError("--task and --out are for evaluating algorithms without a RUN")
        config = RunDir(run).load_config()
        changes = list(overrides or [])
        if specs is not None:
            changes.append(f"eval.algorithms={json.dumps(specs)}")
        if changes:
            config = build_config(config.to_dict(), changes, source=str(run))
            RunDir(run).write_config(config)
        points = evaluate_run(run, n_prompts=n_prompts, show_progress=True)
        print_evaluation(points, config, run)
        return
    if task is None:
        raise ConfigError("give a RUN directory, or --task NAME to evaluate algorithms alone")
    data: dict[str, Any] = {"name": f"yardsticks-{task}", "task": {"name": task}, "eval": {}}
    if specs is not None:
        data["eval"]["algorithms"] = specs
    config = build_config(data, overrides or [], source="--task/--set")
    points = evaluate_learners(config, n_prompts=n_prompts, show_progress=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_evaluation(points, config, RunDir(out))
    print_evaluation(points, config, out)


@app.command()
@user_errors_exit_cleanly
def quickstart(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/quickstart"),
    overrides: OverrideOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a small transformer on d=5 linear regression, evaluate it, and print the results.

    Reruns resume the existing run directory (nothing is trained twice).
    """
    from iclab.evaluation.run_eval import evaluate_run
    from iclab.run import RunDir
    from iclab.training.trainer import train_run

    show_warnings_briefly()
    config = load_config("quickstart", overrides or [])
    train_run(config, out, resume=RunDir(out).exists(), show_progress=progress)
    points = evaluate_run(out, show_progress=progress)
    print_evaluation(points, config, out)


def first_line(text: str | None) -> str:
    """A docstring's summary: its first paragraph on one line."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


@app.command()
def tasks() -> None:
    """List the in-context task families with their options, defaults and papers."""
    from iclab.tasks import TASKS

    console.print("[bold]task families[/] (task.name), each with its defaults and options\n")
    for name, family in TASKS:
        sizes = (
            f"n_points={family.default_n_points} (tokens)"
            if family.kind == "tokens"
            else f"n_dims={family.default_n_dims}, n_points={family.default_n_points}"
        )
        console.print(f"[bold]{name}[/] ({family.kind}): {escape(first_line(family.__doc__))}")
        console.print(f"    paper: {family.paper}", highlight=False, markup=False)
        console.print(f"    defaults: {sizes}", highlight=False, markup=False)
        for field, info in family.Options.model_fields.items():
            doc = f": {info.description}" if info.description else ""
            console.print(f"    {field}={info.default!r}{doc}", highlight=False, markup=False)
        console.print(
            f"    yardsticks: {', '.join(family.yardsticks) or '-'}\n",
            highlight=False,
            markup=False,
        )


@app.command()
def models() -> None:
    """List the sequence mixers a model can be built from, with options and state sizes."""
    import torch

    from iclab.models.mixers import MIXERS

    width, heads, lengths = 256, 8, (64, 1024)
    console.print(
        "[bold]mixers[/] (model.mixer, or one per block in model.layers; options as in "
        "linear_attention(form=chunked))\n"
        f"state: floats carried between tokens per layer and sequence, E = d_model, "
        f"H = n_heads, t = tokens so far; the numbers are for E={width}, H={heads}\n",
        highlight=False,
    )
    for name, cls in MIXERS:
        with torch.device("meta"):
            mixer = cls(width, heads)
        sizes = ", ".join(f"t={t}: {mixer.state_size(t):,}" for t in lengths)
        console.print(f"[bold]{name}[/]: {escape(first_line(cls.__doc__))}")
        console.print(f"    paper: {cls.paper}", highlight=False, markup=False)
        console.print(f"    forms: {', '.join(cls.forms)}", highlight=False, markup=False)
        console.print(f"    state: {cls.state_formula} ({sizes})", highlight=False, markup=False)
        for field, info in cls.Options.model_fields.items():
            console.print(
                f"    {field}={info.default!r}: {info.description}", highlight=False, markup=False
            )
        console.print()
    console.print(
        "[bold]around every mixer[/] (model.*): "
        + "; ".join(
            f"{field}: {ModelConfig.model_fields[field].description}"
            for field in ("mlp_ratio", "norm", "target_params")
        ),
        highlight=False,
    )


@app.command()
def algorithms() -> None:
    """List the reference algorithms, their options, and the tasks they apply to."""
    from iclab.algorithms import ALGORITHMS
    from iclab.algorithms.base import algorithm_options, describe_applies_to

    console.print("[bold]algorithms[/] (eval.algorithms; options as in knn(k=5))\n")
    for name, cls in ALGORITHMS:
        console.print(f"[bold]{name}[/]: {escape(first_line(cls.__doc__))}")
        console.print(f"    applies to: {describe_applies_to(cls)}", highlight=False, markup=False)
        console.print(
            f"    options: {algorithm_options(cls) or '-'}\n", highlight=False, markup=False
        )
