"""The ``iclab`` command line: each command parses its arguments, calls the library and prints
what ``iclab.report.console`` renders."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape

from iclab.errors import ConfigError, UserError
from iclab.specs import split_specs

app = typer.Typer(
    help="iclab: meta-train sequence models to learn in context, and measure them against the "
    "optimal and classical learning algorithms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs rewrap to the terminal's width
)
console = Console()
errors = Console(stderr=True)
DEBUG = {"tracebacks": False}  # set by --debug


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of every error, yours too.")
    ] = False,
) -> None:
    """iclab: meta-train sequence models to learn in context, and measure them against the
    optimal and classical learning algorithms."""
    DEBUG["tracebacks"] = debug


def user_errors_exit_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """An error the user can fix (``UserError``) prints one clear message and exits with status
    2; any other exception is a bug in iclab and shows its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        show_warnings_briefly()
        try:
            return command(*args, **kwargs)
        except UserError as error:
            if DEBUG["tracebacks"]:
                raise
            errors.print(
                f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper


def show_warnings_briefly() -> None:
    warnings.showwarning = lambda message, category, *_: errors.print(
        f"[yellow]warning:[/] {escape(str(message))}", highlight=False
    )


def show(renderables: Iterable[RenderableType]) -> None:
    """Print what ``report.console`` rendered, wrapped to the terminal (indents kept)."""
    for renderable in renderables:
        console.print(renderable, highlight=False)


def show_listing(section: str) -> None:
    """A listing from the snapshot of the registries (``iclab.listing``): no torch to import."""
    from iclab.listing import read
    from iclab.report.listings import listing

    show(listing(read(), section))


OverrideOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field, e.g. --set train.steps=2000."),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="CPU threads per process (default: torch's, the core count). With several "
        "trainings on a few cores, 1 avoids oversubscription.",
    ),
]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]


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
    progress: ProgressOption = True,
    threads: ThreadsOption = None,
) -> None:
    """Meta-train a model on an in-context task; writes a run directory.

    Data-parallel on several GPUs or CPU processes: torchrun --nproc_per_node N -m iclab train
    CONFIG (the run's batch is split into train.batch_shards shards, by default N)."""
    from iclab.config import build_config, load_config
    from iclab.run import RunDir, train_run
    from iclab.training.distributed import leave_processes

    if resume is not None:
        if config is not None:
            raise ConfigError("give either CONFIG or --resume RUN_DIR, not both")
        run_config = RunDir(resume).load_config()
        if overrides:
            run_config = build_config(run_config.to_dict(), overrides, source=f"--resume {resume}")
        run_dir = resume
    else:
        if config is None:
            raise ConfigError("give a CONFIG file or preset, or --resume RUN_DIR")
        run_config = load_config(config, overrides or [])
        run_dir = out or Path("runs") / run_config.name
    try:
        trainer = train_run(
            run_config,
            run_dir,
            resume=resume is not None,
            show_progress=progress,
            threads=threads,
        )
    finally:
        leave_processes()  # under torchrun
    if trainer.processes.is_main:
        console.print(f"run directory: [bold]{escape(str(run_dir))}[/]", soft_wrap=True)
        console.print(f"next: iclab eval {escape(str(run_dir))}", highlight=False, soft_wrap=True)


def eval_overrides(
    overrides: list[str] | None,
    algorithms: str | None,
    shift: str | None,
    n_points: int | None,
    n_prompts: int | None,
    reference: str | None,
    caches: list[str] | None = None,
) -> list[str]:
    """The eval command's flags as ``eval.*`` overrides, after the ``--set`` ones."""
    changes = list(overrides or [])
    if caches:
        changes.append(
            f"eval.caches={json.dumps([s for text in caches for s in split_specs(text)])}"
        )
    if algorithms is not None:
        changes.append(f"eval.algorithms={json.dumps(split_specs(algorithms))}")
    if shift is not None:
        changes.append(f"eval.shifts={json.dumps([] if shift == 'none' else split_specs(shift))}")
    if n_points is not None:
        changes.append(f"eval.n_points={n_points}")
    if n_prompts is not None:
        changes.append(f"eval.n_prompts={n_prompts}")
    if reference is not None:
        changes.append(f"eval.reference={json.dumps(reference)}")
    return changes


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
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="Override an eval.* field, e.g. --set eval.seed=3 (with --task, task.* too).",
        ),
    ] = None,
    n_prompts: Annotated[
        int | None, typer.Option(min=2, help="Prompts to sample (default: config).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Without a RUN: directory for curves.csv and curves.png."),
    ] = None,
    shift: Annotated[
        str | None,
        typer.Option(
            help="Distribution shifts to evaluate besides the training distribution, e.g. "
            "'skewed_covariance,scale_inputs(factor=2)', 'all', or 'none'; '+' composes two "
            "(skewed_covariance+noisy_targets); iclab shifts lists them."
        ),
    ] = None,
    n_points: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Examples per prompt (default: as trained); more tests length generalisation.",
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Learner the others are compared with prompt by prompt (default: the first "
            "algorithm)."
        ),
    ] = None,
    cache: Annotated[
        list[str] | None,
        typer.Option(
            help="A KV-cache policy to run the model under besides its full cache, e.g. "
            "'snapkv(budget=64)'; repeat or comma-separate for several (iclab caches lists "
            "them). Writes caches.csv (memory per layer) and kept.png.",
        ),
    ] = None,
    checkpoints: Annotated[
        str,
        typer.Option(
            help="Which checkpoints of RUN to evaluate: latest, all (every one it kept, each "
            "in its own eval/NNN, plus plots/checkpoints.png along training), or steps, e.g. "
            "'500,1000'."
        ),
    ] = "latest",
    progress: ProgressOption = True,
    threads: ThreadsOption = None,
) -> None:
    """Evaluate a run and its algorithms on the same fresh prompts, or, with --task, the
    algorithms alone (the yardsticks a model will be measured against).

    Every learner sees the same prompts, so the differences to the reference learner are
    paired: eval/differences.csv has their own confidence intervals. Evaluating never changes
    the run's config.yaml: what it used is written to eval/settings.yaml."""
    from iclab.config import build_config
    from iclab.devices import set_threads
    from iclab.report.console import checkpoint_table, evaluation_files, evaluation_tables
    from iclab.run import (
        RunDir,
        evaluate_checkpoints,
        evaluate_config,
        evaluate_run,
        with_eval_overrides,
        write_evaluation,
    )
    from iclab.run.evaluation import dropped_checkpoints_note

    set_threads(threads)
    changes = eval_overrides(overrides, algorithms, shift, n_points, n_prompts, reference, cache)
    if run is not None:
        if task is not None or out is not None:
            raise ConfigError("--task and --out are for evaluating algorithms without a RUN")
        config = with_eval_overrides(RunDir(run).load_config(), changes, f"iclab eval {run}")
        report_skipped_shifts(config)
        if checkpoints.strip() != "latest":
            steps = checkpoint_steps(checkpoints)
            evaluations = evaluate_checkpoints(run, steps, changes, show_progress=progress)
            show([checkpoint_table([e.step for e in evaluations], evaluations, config)])
            note = dropped_checkpoints_note(config) if steps is None else None
            if note is not None:
                console.print(f"note: {note}", highlight=False, soft_wrap=True)
            console.print(
                f"evaluations: {escape(', '.join(str(e.directory) for e in evaluations))}\n"
                f"  along training: {escape(str(RunDir(run).plots_dir / 'checkpoints.png'))}",
                highlight=False,
            )
            return
        evaluation = evaluate_run(run, changes, show_progress=progress)
        tables = evaluation_tables(evaluation, config)
        if config.eval.caches:
            tables.append(cache_memory_table(evaluation.directory, config))
        show([*tables, evaluation_files(evaluation.directory, evaluation)])
        return
    if task is None:
        raise ConfigError("give a RUN directory, or --task NAME to evaluate algorithms alone")
    if checkpoints.strip() != "latest":
        raise ConfigError("--checkpoints chooses a RUN's checkpoints; --task has none")
    if cache:
        raise ConfigError("--cache runs a RUN's model under a cache policy; --task has no model")
    data: dict[str, Any] = {"name": f"yardsticks-{task}", "task": {"name": task}}
    config = build_config(data, changes, source="--task/--set")
    report_skipped_shifts(config)
    evaluation = evaluate_config(config, show_progress=progress)
    show(evaluation_tables(evaluation, config))
    if out is None:
        console.print("nothing written: give --out DIR to keep the tables and plots")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_evaluation(evaluation, config, out)
    console.print(f"tables and figures: {escape(str(out))}", highlight=False)


def cache_memory_table(directory: Path, config: Any) -> Any:
    """The memory each cache policy held in an evaluation, beside the full cache's."""
    from iclab.evaluation.caches import read_memory_csv
    from iclab.report.console import memory_table
    from iclab.run import evaluation_points

    full = config.build_model().state_per_layer(evaluation_points(config))
    return memory_table(read_memory_csv(directory / "caches.csv"), full)


def checkpoint_steps(text: str) -> list[int] | None:
    """``--checkpoints`` other than latest: None for all, or the steps listed."""
    text = text.strip()
    if text == "all":
        return None
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--checkpoints {text!r}: give latest, all, or training steps such as '500,1000'"
        ) from None


def report_skipped_shifts(config: Any) -> None:
    """``--shift all`` leaves out the shifts a task does not allow: say which and why."""
    from iclab.evaluation.shifts import resolve_shifts

    _, skipped = resolve_shifts(config.eval.shifts, config.evaluation_task().build())
    for reason in skipped:
        console.print(f"[dim]left out: {escape(reason)}[/]")


@app.command()
@user_errors_exit_cleanly
def shifts() -> None:
    """List the distribution shifts (iclab eval RUN --shift NAME) with their options."""
    show_listing("shifts")


@app.command()
@user_errors_exit_cleanly
def caches() -> None:
    """List the KV-cache policies (iclab eval RUN --cache SPEC, iclab longctx) with their
    options."""
    show_listing("caches")


@app.command()
@user_errors_exit_cleanly
def report(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Write RUN/report.html: config, environment, training, evaluation and checkpoints on one
    self-contained page (images embedded, nothing fetched)."""
    from iclab.run import write_report

    console.print(f"report: [bold]{escape(str(write_report(run)))}[/]", soft_wrap=True)


@app.command()
@user_errors_exit_cleanly
def predict(
    run: Annotated[
        str,
        typer.Argument(
            help="Run directory, model file (iclab export) or bundled model "
            "(tabular_regression, tabular_classification)."
        ),
    ],
    context: Annotated[Path, typer.Option(help="CSV of the rows to learn from, with the target.")],
    query: Annotated[Path, typer.Option(help="CSV of the rows to predict (same feature columns).")],
    target: Annotated[
        str | None, typer.Option(help="The target column of --context (default: its last).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Predictions CSV (default: QUERY_predictions.csv).")
    ] = None,
    n_estimators: Annotated[int, typer.Option(min=1, help="Ensemble members.")] = 8,
    max_context: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Context rows per member, a random subset past it (default 512, or what the "
            "model's learned positions read).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the members' views.")] = 0,
) -> None:
    """Predict the rows of a CSV file from those of another, in context: the model reads the
    context rows and answers each query row (no training). Categorical columns and missing
    values are handled; with the target column in --query, the score is printed too."""
    from iclab.sklearn.tables import predict_csv

    result = predict_csv(run, context, query, target, out, n_estimators, seed, max_context)
    metric = "accuracy" if result.kind == "classification" else "R²"
    scored = "" if result.score is None else f", {metric} {result.score:.4f}"
    console.print(
        f"{result.kind} of {escape(result.target)}: {result.n_query} rows predicted from "
        f"{result.n_context} context rows{scored}"
    )
    console.print(f"predictions: [bold]{escape(str(result.out))}[/]", soft_wrap=True)


@app.command()
@user_errors_exit_cleanly
def export(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    file: Annotated[Path, typer.Argument(help="Model file to write (.safetensors).")],
) -> None:
    """Write a run's newest checkpoint as one safetensors file with its config inside, for
    iclab predict, InContextRegressor(run=FILE) or bundling with the package."""
    from iclab.sklearn.model_file import export_model

    path = export_model(run, file)
    console.print(
        f"model: [bold]{escape(str(path))}[/] ({path.stat().st_size:,} bytes)", soft_wrap=True
    )


@app.command()
@user_errors_exit_cleanly
def probe(
    run: Annotated[Path, typer.Argument(help="Trained run directory.")],
    probe: Annotated[
        str,
        typer.Option(
            "--probe",
            "-p",
            help="Probe specs, comma-separated, e.g. 'gd_alignment(steps=1),linear_probe' "
            "(iclab probes lists them).",
        ),
    ],
    checkpoints: Annotated[
        str,
        typer.Option(
            help="Which checkpoints to probe: latest, all (every one RUN kept, each in "
            "probes/PROBE/steps/step-N, with probes/PROBE/steps/summary.csv), or steps, e.g. "
            "'500,1000'."
        ),
    ] = "latest",
    progress: ProgressOption = True,
) -> None:
    """Probe what a trained model computes; writes RUN/probes/PROBE/ (summary.json, tables
    as CSV, figures as PNG), which `iclab report` shows."""
    from iclab.probes import build_probe, probe_run
    from iclab.probes.run_probe import probe_checkpoints, probe_dir
    from iclab.report.console import probe_steps_table, probe_table
    from iclab.run import RunDir

    for written in split_specs(probe):
        spec = build_probe(written).spec  # canonical, as its directory is named
        if checkpoints.strip() != "latest":
            steps = checkpoint_steps(checkpoints)
            results = probe_checkpoints(run, spec, steps, show_progress=progress)
            console.print(probe_steps_table(spec, {s: r.summary for s, r in results.items()}))
            where = probe_dir(RunDir(run), spec) / "steps"
            console.print(f"  files: {where}", soft_wrap=True, markup=False)
            continue
        result = probe_run(run, spec, show_progress=progress)
        console.print(probe_table(spec, run, result.summary))
        console.print(f"  files: {probe_dir(RunDir(run), spec)}", soft_wrap=True, markup=False)


@app.command()
@user_errors_exit_cleanly
def longctx(
    run: Annotated[Path, typer.Argument(help="Trained run directory.")],
    policies: Annotated[
        str | None,
        typer.Option(
            help="Cache policy specs, comma-separated; each without a budget is run at every "
            "--budgets value (default: window, sink_window, h2o, tova, snapkv, knorm, random; "
            "iclab caches lists them).",
        ),
    ] = None,
    budgets: Annotated[
        str, typer.Option(help="KV entries per head and layer, comma-separated.")
    ] = "16,32,64",
    n_points: Annotated[
        int | None,
        typer.Option(min=1, help="Examples per prompt (default: the run's evaluation length)."),
    ] = None,
    n_prompts: Annotated[int, typer.Option(min=2, help="Prompts to sample.")] = 256,
    with_runs: Annotated[
        list[Path] | None,
        typer.Option(
            "--with",
            help="Another run on the same task (a recurrent model, say), evaluated on the same "
            "prompts and placed on the memory axis; repeat for several.",
        ),
    ] = None,
    threads: ThreadsOption = None,
    progress: ProgressOption = True,
) -> None:
    """A run's model under KV-cache policies at several budgets, beside its full cache, other
    runs and the algorithms on the same long prompts: metric vs examples, metric vs memory
    per layer, and which positions each policy kept (RUN/longctx/NNN, shown by iclab report)."""
    from iclab.report.console import longctx_table
    from iclab.run.longctx import long_context

    try:
        sizes = [int(budget) for budget in budgets.split(",")]
    except ValueError:
        raise ConfigError(f"--budgets {budgets!r}: give entry counts such as '16,32,64'") from None
    result = long_context(
        run,
        policies=[policies] if policies else [],
        budgets=sizes,
        n_points=n_points,
        n_prompts=n_prompts,
        others=with_runs or [],
        show_progress=progress,
        threads=threads,
    )
    show([longctx_table(result.curves, result.memory, result.k)])
    console.print(
        f"long context: {escape(str(result.directory))}\n"
        "  settings.yaml, curves.csv, memory.csv, caches.csv, kept.csv, curves.png, memory.png"
        + (", kept.png" if (result.directory / "kept.png").exists() else ""),
        highlight=False,
    )


@app.command()
@user_errors_exit_cleanly
def probes() -> None:
    """List the probes with their options and papers."""
    show_listing("probes")


@app.command()
@user_errors_exit_cleanly
def reproduce(
    name: Annotated[
        str, typer.Argument(help="A reproduction (iclab reproduce --list), or all.")
    ] = "all",
    scale: Annotated[
        str,
        typer.Option(
            help="smoke: seconds, tiny runs that test the code (the verdict means nothing); "
            "cpu: minutes on 2 CPU cores; paper: the paper's sizes (GPU)."
        ),
    ] = "cpu",
    out: Annotated[Path, typer.Option(help="Directory of the reproductions.")] = Path(
        "runs/reproductions"
    ),
    list_them: Annotated[
        bool, typer.Option("--list", help="List the reproductions and their claims.")
    ] = False,
    progress: ProgressOption = True,
    threads: ThreadsOption = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Runs to train at once, each in its own process with --threads torch threads "
            "(default: the cores shared out). On 2 cores --jobs 2 trains several runs "
            "1.2-1.4x sooner than one after another.",
        ),
    ] = 1,
) -> None:
    """Reproduce a paper's headline claim: its runs, a figure like the paper's and a verdict
    (reproduced, not reproduced or inconclusive) in OUT/NAME/verdict.json."""
    if list_them:
        show_listing("reproductions")
        return
    from iclab.report.console import verdict_table
    from iclab.reproductions import REPRODUCTIONS
    from iclab.reproductions import reproduce as run_reproduction
    from iclab.reproductions.base import SCALES

    if scale not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    names = REPRODUCTIONS.names() if name == "all" else [REPRODUCTIONS.get(name).name]
    from iclab.devices import set_threads

    set_threads(threads)
    if scale == "paper":
        console.print(paper_scale_estimate(names))
    verdicts = []
    for number, entry in enumerate(names, 1):
        if len(names) > 1:  # `all` runs for hours: a log says where it is and what came out
            expected = REPRODUCTIONS.get(entry).cpu_minutes
            about = f": about {expected:g} min on 2 cores" if scale == "cpu" else ""
            console.print(f"reproduction {number} of {len(names)}, {entry}{about}", highlight=False)
        verdict = run_reproduction(
            entry, out, scale, show_progress=progress, jobs=jobs, threads=threads
        )
        verdicts.append(verdict)
        if len(names) > 1:
            console.print(f"{entry}: {verdict.verdict} in {verdict.minutes:.1f} min")
    console.print(verdict_table(verdicts, scale))
    console.print(
        f"verdicts and figures: {escape(str(out))}/NAME/verdict.json, figure.png", soft_wrap=True
    )


def paper_scale_estimate(names: list[str]) -> str:
    """The estimated GPU time of training ``names`` at paper scale, and a warning without a GPU."""
    import torch

    from iclab.reproductions import REPRODUCTIONS
    from iclab.reproductions.budget import ESTIMATE_GPU, gpu_hours

    hours = sum(gpu_hours(REPRODUCTIONS.get(n).trainings("paper").values()) for n in names)
    line = f"paper scale: about {hours:.2g} {ESTIMATE_GPU} hours of training (an estimate)"
    if not torch.cuda.is_available():
        line += "; no GPU here, so expect far longer on this CPU"
    return line


@app.command()
@user_errors_exit_cleanly
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Trained run directories.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for the tables and figures (default runs/compare-A-B)."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(help="The run every other model is compared with (default: the first)."),
    ] = None,
    k: Annotated[
        str | None,
        typer.Option(
            "--k",
            help="Prefix lengths to show, e.g. 2,5,10 (default: where the models differ most, "
            "and d and 2d for regression).",
        ),
    ] = None,
    algorithms: Annotated[
        str | None,
        typer.Option(help="Algorithms to evaluate beside the models (default: the first run's)."),
    ] = None,
    n_prompts: Annotated[
        int | None, typer.Option(min=2, help="Prompts to evaluate on (default: the first run's).")
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Compare trained runs: runs of one task are evaluated together on the very same prompts,
    so each model's difference to the reference run comes with its own paired interval.

    Prints parameters, steps and state size beside each model's curve, one line per pair ("A −
    B at k=5: -0.120 [-0.150, -0.090], A better"), and warns about a model that is nowhere
    better than a learner that ignores its context. Runs of different tasks are overlaid."""
    from iclab.kinds import kind_of
    from iclab.report.compare import default_ks, never_learned, pair_sentences, unique_label
    from iclab.report.console import curve_table, runs_compared_table
    from iclab.run.compare import compare_runs

    names = "-".join(unique_label(run, runs).replace("/", "_") for run in runs)
    out = out or Path("runs") / f"compare-{names}"
    specs = None if algorithms is None else split_specs(algorithms)
    changes = [] if n_prompts is None else [f"eval.n_prompts={n_prompts}"]
    comparison = compare_runs(runs, out, specs, reference, changes, show_progress=progress)
    task = comparison.config.task
    kind = kind_of(task.build().kind)
    models = [run.label for run in comparison.runs]
    curves = comparison.evaluation.curves
    ks = parse_ks(k) if k is not None else default_ks(curves, models, task.n_dims)
    unshifted = [p for p in curves if p.shift == "none"]
    console.print(runs_compared_table(comparison))
    console.print(curve_table(unshifted, ks, kind.metric.label))
    for line in pair_sentences(comparison.evaluation.differences, models, ks, kind.metric):
        console.print(line, highlight=False, soft_wrap=True)
    chance = kind.chance(task.io())
    for model in models:
        if never_learned(curves, model, chance, kind.metric):
            errors.print(
                f"[yellow]warning:[/] {escape(model)} is nowhere better than a learner that "
                f"ignores its context ({kind.metric.name} {chance:g}): it has not learned in "
                "context",
                highlight=False,
                soft_wrap=True,
            )
    figures = sorted(path.name for path in out.glob("curves*.png"))
    console.print(
        f"\ncomparison: {out} (curves.csv, differences.csv, {', '.join(figures)})",
        highlight=False,
        soft_wrap=True,
    )


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in split_specs(text)]
    except ValueError:
        raise ConfigError(f"--k {text!r}: give prefix lengths such as 2,5,10") from None
    if not ks or min(ks) < 0:
        raise ConfigError(f"--k {text!r}: give prefix lengths such as 2,5,10")
    return ks


@app.command()
@user_errors_exit_cleanly
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file (YAML): base config, parameters.")],
    out: Annotated[Path, typer.Option(help="Runs go to OUT/NAME/TRIAL.")] = Path("runs"),
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to run on, e.g. auto or ray://head:10001 (default: a local Ray "
            "instance); its nodes must share OUT."
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Override a config field in every trial, after the file's set."
        ),
    ] = None,
) -> None:
    """Grid or random search over config fields on Ray Tune: one run directory per trial under
    OUT/NAME, then sweep.csv, sweep.json and sweep.png comparing them.

    Trials whose config does not validate are listed as invalid, trials that raise as failed;
    the others run. Reruns read completed trials back and resume the rest.
    """
    from iclab.report.console import styled_status, sweep_table
    from iclab.sweeps import TrialRow, run_sweep, short_keys

    def announce(row: TrialRow) -> None:
        outcome = row.error if row.metric is None else f"{row.metric:.4g}"
        outcome = "" if outcome is None else f": {escape(outcome)}"
        console.print(f"{styled_status(row.status)} {escape(row.trial)}{outcome}", soft_wrap=True)

    def progress_line(line: str) -> None:
        console.print(escape(line), highlight=False, soft_wrap=True)

    result = run_sweep(
        file,
        out,
        address,
        on_trial=announce,
        overrides=overrides or [],
        on_progress=progress_line,
    )
    console.print(sweep_table(result, short_keys(list(result.spec.parameters))))
    for row in result.ranked():
        if row.error is not None:
            console.print(
                f"{styled_status(row.status)} {escape(row.trial)}: {escape(row.error)}",
                soft_wrap=True,
            )
    files = ", ".join(path.name for path in result.files)
    console.print(f"sweep directory: [bold]{escape(str(result.directory))}[/] ({files})")
    if not any(row.status == "completed" for row in result.rows):
        console.print("[red]every trial failed or was invalid[/]")
        raise typer.Exit(1)
    best = result.best
    console.print(
        "no completed trial has a finite metric"
        if best is None
        else f"best: [bold]{escape(best.trial)}[/] ({result.measure} {best.metric:.4g})",
        soft_wrap=True,
    )
    console.print(f"runs: iclab runs --root {escape(str(result.directory))}", soft_wrap=True)


@app.command()
@user_errors_exit_cleanly
def quickstart(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/quickstart"),
    overrides: OverrideOption = None,
    progress: ProgressOption = True,
    threads: ThreadsOption = None,
) -> None:
    """Train a small transformer on d=5 linear regression, evaluate it, print the results and
    write the HTML report.

    Reruns resume the existing run directory (nothing is trained twice).
    """
    from iclab.config import load_config
    from iclab.report.console import evaluation_files, evaluation_tables
    from iclab.run import RunDir, evaluate_run, train_run, write_report

    config = load_config("quickstart", overrides or [])
    train_run(config, out, resume=RunDir(out).exists(), show_progress=progress, threads=threads)
    evaluation = evaluate_run(out, show_progress=progress)
    show(
        [*evaluation_tables(evaluation, config), evaluation_files(evaluation.directory, evaluation)]
    )
    console.print(f"  report: [bold]{escape(str(write_report(out)))}[/]", soft_wrap=True)


@app.command()
@user_errors_exit_cleanly
def tasks() -> None:
    """List the in-context task families with their options, defaults and papers."""
    show_listing("tasks")


@app.command()
@user_errors_exit_cleanly
def models() -> None:
    """List the sequence mixers a model can be built from, with options and state sizes."""
    show_listing("mixers")


@app.command()
@user_errors_exit_cleanly
def algorithms() -> None:
    """List the reference algorithms, their options, and the tasks they apply to."""
    show_listing("algorithms")


runs_app = typer.Typer(
    help="The runs under a runs directory, listed from its index (ROOT/index.sqlite, a cache of "
    "the run directories that only these commands write, brought up to date on every call).",
    add_completion=False,
)
app.add_typer(runs_app, name="runs")
RootOption = Annotated[Path, typer.Option(help="Directory that holds the run directories.")]


@runs_app.callback(invoke_without_command=True)
@user_errors_exit_cleanly
def runs(
    context: typer.Context,
    root: RootOption = Path("runs"),
    task: Annotated[str | None, typer.Option(help="Only runs of this task family.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Only models whose description contains this (softmax).")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only runs with this status (new, running, completed, failed, interrupted, "
            "stopped: its process died, broken)."
        ),
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            help="Field to sort by: name, task, model, n_params, steps, status, headline, "
            "created, updated, ..."
        ),
    ] = "updated",
    descending: Annotated[
        bool | None,
        typer.Option(
            "--desc/--asc", help="Order (default: newest first for times, else ascending)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Show at most this many runs.")] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Rebuild the index from the run directories first.")
    ] = False,
) -> None:
    """List the runs under ROOT: task, model, parameters, steps, status and headline metric."""
    from iclab.report.console import runs_table
    from iclab.run import catalog

    if context.invoked_subcommand is not None:
        context.obj = root  # `iclab runs --root X show NAME` looks under X
        return
    if rebuild:
        catalog.rebuild(root)
    if descending is None:
        descending = sort in ("created", "updated")
    entries = catalog.list_runs(root, task, model, status, sort, descending, limit)
    if not entries:
        filtered = any(value is not None for value in (task, model, status))
        console.print(f"no runs {'match' if filtered else 'yet'} in {root}", highlight=False)
        return
    console.print(runs_table(entries, root))
    for entry in entries:
        if entry.problem is not None:
            console.print(
                f"[red]broken[/] {escape(entry.name)}: {escape(entry.problem.splitlines()[0])}"
            )


@runs_app.command("show")
@user_errors_exit_cleanly
def runs_show(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="Run name: its path under ROOT (sweep1/trial-0).")],
    root: Annotated[
        Path | None,
        typer.Option(
            help="Directory that holds the run directories (default: iclab runs --root, else runs)."
        ),
    ] = None,
) -> None:
    """Everything the index knows about one run, its config, and where its results are."""
    from iclab.report.console import run_details
    from iclab.run import RunDir, catalog

    root = root or context.obj or Path("runs")
    entry = catalog.get_run(root, name)
    console.print(run_details(entry))
    config_path = entry.path / "config.yaml"
    console.print(f"\n[bold]config[/] ({escape(str(config_path))})")
    console.print(config_path.read_text(), markup=False, highlight=False, soft_wrap=True)
    results = [
        *RunDir(entry.path).evaluations(),
        *sorted((entry.path / "plots").glob("*.png")),
        entry.path / "report.html",
    ]
    present = [path for path in results if path.exists()]
    if present:
        console.print("[bold]results[/]")
        for path in present:
            console.print(f"  {path}", markup=False, highlight=False, soft_wrap=True)
