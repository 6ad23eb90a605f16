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
from iclab.evaluation.curves import CurvePoint, Evaluation, PairedDifference, reported_ks
from iclab.evaluation.shifts import SHIFTS
from iclab.registry import UnknownNameError
from iclab.specs import split_specs
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
SHIFT_NAMES = SHIFTS.names()
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


def print_evaluation(evaluation: Evaluation, config: RunConfig, run: Path | None) -> None:
    """Every learner's metric at a few prefix lengths; under shifts, each shift at one k; the
    paired difference of the first learner to the reference; then where the files are."""
    from iclab.metrics import METRICS

    metric = METRICS[config.task.build().kind]
    unshifted = [p for p in evaluation.curves if p.shift == "none"]
    ks = reported_ks(unshifted, config.task.n_dims)
    console.print(curve_table(unshifted, ks, metric.label))
    shifts = list(dict.fromkeys(p.shift for p in evaluation.curves))
    if len(shifts) > 1:
        console.print(shift_table(evaluation.curves, shifts, ks[-2] if len(ks) > 1 else ks[-1]))
    if evaluation.differences:
        console.print(difference_table(evaluation.differences, shifts, ks))
    if run is not None:
        console.print(
            f"\nrun directory: [bold]{run}[/]\n"
            f"  tables: {run / 'eval' / 'curves.csv'}, {run / 'eval' / 'differences.csv'}\n"
            f"  plots:  {run / 'plots' / 'curves.png'}"
            + (f" and {len(shifts) - 1} curves-SHIFT.png" if len(shifts) > 1 else ""),
            soft_wrap=True,
        )


def curve_table(points: Sequence[CurvePoint], ks: Sequence[int], label: str) -> Table:
    """One row per learner: its metric at each of ``ks`` with the 95% interval."""
    table = Table(title=f"{escape(label)} after k in-context examples, ± 95% CI")
    table.add_column("learner", no_wrap=True)
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    for learner in dict.fromkeys(p.learner for p in points):
        by_k = {p.k: p for p in points if p.learner == learner}
        table.add_row(learner, *(with_interval(by_k[k]) if k in by_k else "-" for k in ks))
    return table


def with_interval(row: CurvePoint | PairedDifference, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{row.mean:{sign}.3f}±{row.mean - row.ci_low:.3f}"


def at_most(rows: Sequence[CurvePoint], k: int) -> int:
    """The largest scored k up to ``k`` (shifts such as orthogonal_query stop early)."""
    return max((p.k for p in rows if p.k <= k), default=min(p.k for p in rows))


def compact(value: float) -> str:
    """A mean in at most six characters: 0.093, 12.40, 122, 3.1e+04."""
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"


def shift_table(points: Sequence[CurvePoint], shifts: Sequence[str], k: int) -> Table:
    """One row per shift: every learner's mean at ``k`` (or the last k the shift scores); the
    intervals are in eval/curves.csv and the report."""
    learners = list(dict.fromkeys(p.learner for p in points))
    table = Table(title=f"mean under each shift at k={k}")
    table.add_column("shift", no_wrap=True)
    for learner in learners:
        table.add_column(learner, justify="right", overflow="fold")
    for shift in shifts:
        rows = [p for p in points if p.shift == shift]
        shown = at_most(rows, k)
        cells = {p.learner: compact(p.mean) for p in rows if p.k == shown}
        label = shift if shown == k else f"{shift} k={shown}"
        table.add_row(label, *(cells.get(learner, "-") for learner in learners))
    return table


def difference_table(
    differences: Sequence[PairedDifference], shifts: Sequence[str], ks: Sequence[int]
) -> Table:
    """The first learner minus the reference, prompt by prompt, per shift at the reported k
    (k=1 left out when there are four, to fit 80 columns)."""
    learner, reference = differences[0].learner, differences[0].reference
    ks = ks[1:] if len(ks) > 3 else ks
    table = Table(title=f"{learner} − {reference} on the same prompts, ± 95% CI (*: excludes 0)")
    table.add_column("shift", no_wrap=True)
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    for shift in shifts:
        rows = {p.k: p for p in differences if p.shift == shift and p.learner == learner}
        if not rows:
            continue
        cells = []
        for k in ks:
            row = rows.get(k)
            excludes_zero = row is not None and (row.ci_low > 0 or row.ci_high < 0)
            cells.append(
                "-" if row is None else with_interval(row, signed=True) + "*" * excludes_zero
            )
        table.add_row(shift, *cells)
    return table


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


def use_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


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
    threads: ThreadsOption = None,
) -> None:
    """Meta-train a model on an in-context task; writes a run directory.

    Data-parallel on several GPUs or CPU processes: torchrun --nproc_per_node N -m iclab train
    CONFIG (the run's batch is split into train.batch_shards shards, by default N)."""
    from iclab.run import RunDir
    from iclab.training.distributed import leave_processes
    from iclab.training.trainer import train_run

    show_warnings_briefly()
    use_threads(threads)
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
    try:
        trainer = train_run(run_config, run_dir, resume=resume is not None, show_progress=progress)
    finally:
        leave_processes()  # under torchrun
    if trainer.processes.is_main:
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
    shift: Annotated[
        str | None,
        typer.Option(
            help="Distribution shifts to evaluate besides the training distribution, e.g. "
            "'skewed_covariance,scale_inputs(factor=2)', 'all', or 'none' to drop the run's "
            "shifts; '+' composes two (skewed_covariance+noisy_targets). Shifts: "
            + ", ".join(SHIFT_NAMES)
            + "."
        ),
    ] = None,
    n_points: Annotated[
        int | None,
        typer.Option(
            help="Examples per prompt (default: as trained); more tests length generalisation."
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Learner the others are compared with prompt by prompt (default: the first "
            "algorithm)."
        ),
    ] = None,
) -> None:
    """Evaluate a run and its algorithms on the same fresh prompts, or, with --task, the
    algorithms alone (the yardsticks a model will be measured against).

    Every learner sees the same prompts, so the differences to the reference learner are
    paired: eval/differences.csv has their own confidence intervals."""
    from iclab.config import build_config
    from iclab.evaluation.run_eval import evaluate_learners, evaluate_run, write_evaluation
    from iclab.run import RunDir

    show_warnings_briefly()
    changes = list(overrides or [])
    if algorithms is not None:
        changes.append(f"eval.algorithms={json.dumps(split_specs(algorithms))}")
    if shift is not None:
        shifts = [] if shift == "none" else split_specs(shift)
        changes.append(f"eval.shifts={json.dumps(shifts)}")
    if n_points is not None:
        changes.append(f"eval.n_points={n_points}")
    if reference is not None:
        changes.append(f"eval.reference={json.dumps(reference)}")
    if run is not None:
        if task is not None or out is not None:
            raise ConfigError("--task and --out are for evaluating algorithms without a RUN")
        config = RunDir(run).load_config()
        if changes:
            config = build_config(config.to_dict(), changes, source=str(run))
            RunDir(run).write_config(config)
        report_skipped_shifts(config)
        evaluation = evaluate_run(run, n_prompts=n_prompts, show_progress=True)
        print_evaluation(evaluation, config, run)
        return
    if task is None:
        raise ConfigError("give a RUN directory, or --task NAME to evaluate algorithms alone")
    data: dict[str, Any] = {"name": f"yardsticks-{task}", "task": {"name": task}}
    config = build_config(data, changes, source="--task/--set")
    report_skipped_shifts(config)
    evaluation = evaluate_learners(config, n_prompts=n_prompts, show_progress=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_evaluation(evaluation, config, RunDir(out))
    print_evaluation(evaluation, config, out)


def report_skipped_shifts(config: RunConfig) -> None:
    """``--shift all`` leaves out the shifts a task does not allow: say which and why."""
    from iclab.evaluation.shifts import resolve_shifts

    _, skipped = resolve_shifts(config.eval.shifts, config.task.build())
    for reason in skipped:
        console.print(f"[dim]left out: {escape(reason)}[/]")


@app.command()
@user_errors_exit_cleanly
def report(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Write RUN/report.html: config, environment, training, evaluation and checkpoints on one
    self-contained page (images embedded, nothing fetched)."""
    from iclab.report.html import write_report

    path = write_report(run)
    console.print(f"report: [bold]{escape(str(path))}[/]", soft_wrap=True)


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
) -> None:
    """Probe what a trained model computes; writes RUN/probes/<probe>/ (summary.json, tables
    as CSV, figures as PNG), which `iclab report` shows."""
    from iclab.probes import probe_run
    from iclab.probes.run_probe import probe_dir
    from iclab.run import RunDir

    show_warnings_briefly()
    for spec in split_specs(probe):
        result = probe_run(run, spec)
        table = Table(title=f"{escape(spec)} on {escape(str(run))}", show_header=False)
        table.add_column("quantity", no_wrap=True)
        table.add_column("value", justify="right", overflow="fold")
        for key, value in result.summary.items():
            table.add_row(escape(key), f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(table)
        console.print(f"  files: {probe_dir(RunDir(run), spec)}", soft_wrap=True, markup=False)


@app.command()
def probes() -> None:
    """List the probes with their options and papers."""
    from iclab.probes import PROBES

    console.print(
        "[bold]probes[/] (iclab probe RUN --probe NAME; options as in gd_alignment(steps=2))\n"
    )
    for name, cls in PROBES:
        console.print(f"[bold]{name}[/]: {escape(first_line(cls.__doc__))}")
        console.print(f"    paper: {cls.paper}", highlight=False, markup=False)
        for field, info in cls.Options.model_fields.items():
            console.print(
                f"    {field}={info.default!r}: {info.description}", highlight=False, markup=False
            )
        console.print()


@app.command()
@user_errors_exit_cleanly
def reproduce(
    name: Annotated[
        str, typer.Argument(help="A reproduction (iclab reproduce --list), or all.")
    ] = "all",
    scale: Annotated[
        str, typer.Option(help="cpu: minutes on 2 CPU cores; paper: the paper's sizes (GPU).")
    ] = "cpu",
    out: Annotated[Path, typer.Option(help="Directory of the reproductions.")] = Path(
        "runs/reproductions"
    ),
    list_them: Annotated[
        bool, typer.Option("--list", help="List the reproductions and their claims.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    threads: ThreadsOption = None,
) -> None:
    """Reproduce a paper's headline claim: its runs, a figure like the paper's and a verdict
    (reproduced, not reproduced or inconclusive) in OUT/NAME/verdict.json."""
    from iclab.reproductions import REPRODUCTIONS
    from iclab.reproductions import reproduce as run_reproduction

    if list_them:
        for entry, cls in REPRODUCTIONS:
            console.print(
                f"[bold]{entry}[/] ({cls.paper}; about {cls.cpu_minutes:g} min at cpu scale)"
            )
            console.print(f"    {cls.claim}\n", highlight=False, markup=False)
        return
    if scale not in ("cpu", "paper"):
        raise ConfigError(f"--scale must be cpu or paper, got {scale!r}")
    names = REPRODUCTIONS.names() if name == "all" else [REPRODUCTIONS.get(name).name]
    show_warnings_briefly()
    use_threads(threads)
    table = Table(title=f"verdicts ({scale} scale)")
    for column in ("reproduction", "verdict", "numbers"):
        table.add_column(column, overflow="fold")
    for entry in names:
        verdict = run_reproduction(entry, out, scale, show_progress=progress)
        numbers = ", ".join(f"{key}={value:g}" for key, value in verdict.numbers.items())
        style = {"reproduced": "green", "not reproduced": "red"}.get(verdict.verdict, "yellow")
        table.add_row(entry, f"[{style}]{verdict.verdict}[/]", escape(numbers))
    console.print(table)
    console.print(f"verdicts and figures: {out}/NAME/verdict.json, figure.png", soft_wrap=True)


@app.command()
@user_errors_exit_cleanly
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Evaluated run directories.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for curves.csv and the figures (default runs/compare-A-B)."),
    ] = None,
    algorithms: Annotated[
        str | None,
        typer.Option(help="Algorithms to overlay, comma-separated (default: all evaluated)."),
    ] = None,
) -> None:
    """Overlay the curves of several evaluated runs and their algorithms, one figure per
    shift; the models are named after their runs."""
    from iclab.metrics import METRICS
    from iclab.report.compare import unique_label, write_comparison
    from iclab.run import RunDir

    show_warnings_briefly()
    names = "-".join(unique_label(run, runs).replace("/", "_") for run in runs)
    out = out or Path("runs") / f"compare-{names}"
    specs = None if algorithms is None else split_specs(algorithms)
    points = write_comparison(runs, out, specs)
    task = RunDir(runs[0]).load_config().task
    unshifted = [p for p in points if p.shift == "none"]
    label = METRICS[task.build().kind].label
    console.print(curve_table(unshifted, reported_ks(unshifted, task.n_dims), label))
    figures = sorted(path.name for path in out.glob("curves*.png"))
    console.print(f"\ncomparison: [bold]{out}[/] (curves.csv, {', '.join(figures)})")


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
) -> None:
    """Grid or random search over config fields on Ray Tune: one run directory per trial under
    OUT/NAME, then sweep.csv, sweep.json and sweep.png comparing them.

    Trials whose config does not validate are listed as invalid, trials that raise as failed;
    the others run. Reruns read completed trials back and resume the rest.
    """
    from iclab.sweeps import TrialRow, run_sweep, short_keys

    show_warnings_briefly()
    styles = {**STATUS_STYLES, "invalid": "yellow"}

    def announce(row: TrialRow) -> None:
        metric = "" if row.metric is None else f": {row.metric:.4g}"
        console.print(f"[{styles[row.status]}]{row.status}[/] {escape(row.trial)}{metric}")

    result = run_sweep(file, out, address, on_trial=announce)
    keys = short_keys(list(result.spec.parameters))
    table = Table(title=f"sweep {escape(result.spec.name)}: {escape(result.label)}, best first")
    table.add_column("trial", no_wrap=True)
    for key in keys.values():
        table.add_column(escape(key), justify="right")
    table.add_column(result.measure, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    ranked = result.ranked()
    for row in ranked:
        cells = [escape(str(row.values.get(parameter))) for parameter in keys]
        metric = "-" if row.metric is None else f"{row.metric:.4g}"
        status = f"[{styles[row.status]}]{row.status}[/]"
        table.add_row(escape(row.trial), *cells, metric, status)
    console.print(table)
    for row in ranked:
        if row.error is not None:
            console.print(
                f"[{styles[row.status]}]{row.status}[/] {escape(row.trial)}: {escape(row.error)}",
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
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a small transformer on d=5 linear regression, evaluate it, print the results and
    write the HTML report.

    Reruns resume the existing run directory (nothing is trained twice).
    """
    from iclab.evaluation.run_eval import evaluate_run
    from iclab.report.html import write_report
    from iclab.run import RunDir
    from iclab.training.trainer import train_run

    show_warnings_briefly()
    config = load_config("quickstart", overrides or [])
    train_run(config, out, resume=RunDir(out).exists(), show_progress=progress)
    evaluation = evaluate_run(out, show_progress=progress)
    print_evaluation(evaluation, config, out)
    console.print(f"  report: [bold]{escape(str(write_report(out)))}[/]", soft_wrap=True)


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


runs_app = typer.Typer(
    help="The runs under a runs directory, listed from its index (ROOT/index.sqlite, a cache of "
    "the run directories that is brought up to date on every call).",
    add_completion=False,
)
app.add_typer(runs_app, name="runs")
RootOption = Annotated[Path, typer.Option(help="Directory that holds the run directories.")]
STATUS_STYLES = {
    "completed": "green",
    "running": "yellow",
    "interrupted": "yellow",
    "stopped": "red",
    "failed": "red",
    "broken": "red",
    "new": "dim",
}


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
    from iclab import catalog

    if context.invoked_subcommand is not None:
        return
    show_warnings_briefly()
    if rebuild:
        catalog.rebuild(root)
    if descending is None:
        descending = sort in ("created", "updated")
    entries = catalog.list_runs(root, task, model, status, sort, descending, limit)
    if not entries:
        filtered = any(value is not None for value in (task, model, status))
        console.print(f"no runs {'match' if filtered else 'yet'} in {root}", highlight=False)
        return
    table = Table(
        title=f"runs in {escape(str(root))}",
        caption="headline: the model's error (err) or accuracy (acc) at the largest k on the "
        "training distribution",
    )
    table.add_column("name", no_wrap=True)
    for column in ("task", "model"):
        table.add_column(column, overflow="fold")
    for column in ("params", "steps"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("headline", justify="right", no_wrap=True)
    for entry in entries:
        style = STATUS_STYLES.get(entry.status, "")
        table.add_row(
            escape(entry.name),
            escape(entry.task_label),
            escape(entry.model or "-"),
            "-" if entry.n_params is None else f"{entry.n_params:,}",
            "-" if entry.total_steps is None else f"{entry.steps}/{entry.total_steps}",
            f"[{style}]{escape(entry.status)}[/]" if style else escape(entry.status),
            "-" if entry.headline is None else f"{entry.headline:.3f} {entry.headline_metric[:3]}",
        )
    console.print(table)
    for entry in entries:
        if entry.problem is not None:
            console.print(
                f"[red]broken[/] {escape(entry.name)}: {escape(entry.problem.splitlines()[0])}"
            )


@runs_app.command("show")
@user_errors_exit_cleanly
def runs_show(
    name: Annotated[str, typer.Argument(help="Run name: its path under ROOT (sweep1/trial-0).")],
    root: RootOption = Path("runs"),
) -> None:
    """Everything the index knows about one run, its config, and where its results are."""
    from dataclasses import asdict
    from datetime import datetime

    from iclab import catalog

    show_warnings_briefly()
    entry = catalog.get_run(root, name)
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for field, value in asdict(entry).items():
        if isinstance(value, datetime):
            value = value.strftime("%Y-%m-%d %H:%M:%S %Z")
        table.add_row(field, "-" if value is None else escape(str(value)))
    console.print(table)
    config_path = entry.path / "config.yaml"
    console.print(f"\n[bold]config[/] ({escape(str(config_path))})")
    console.print(config_path.read_text(), markup=False, highlight=False, soft_wrap=True)
    results = [
        entry.path / "eval" / "curves.csv",
        entry.path / "eval" / "differences.csv",
        *sorted((entry.path / "plots").glob("*.png")),
        entry.path / "report.html",
    ]
    present = [path for path in results if path.exists()]
    if present:
        console.print("[bold]results[/]")
        for path in present:
            console.print(f"  {path}", markup=False, highlight=False, soft_wrap=True)
