"""What the command line prints reads well at 80 columns: nothing wider, indents kept when a
line wraps, headers broken only between words, every k shown, outliers explained."""

from __future__ import annotations

import io
import itertools
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

from conftest import tiny_config
from iclab.evaluation.curves import CurvePoint, Evaluation, PairedDifference
from iclab.evaluation.shifts import STANDARD_SHIFTS
from iclab.listing import SNAPSHOT as SNAPSHOT_FILE
from iclab.listing import describe, read
from iclab.report import console as render
from iclab.report import listings
from iclab.run.catalog import RunEntry

WIDTH = 80
LEARNERS = ["model", "least_squares", "averaging", "knn", "ridge", "bayes_optimal"]


def rendered(renderables) -> list[str]:
    """The lines a terminal of 80 columns shows."""
    out = Console(width=WIDTH, file=io.StringIO(), color_system=None, highlight=False)
    for renderable in renderables:
        out.print(renderable)
    return out.file.getvalue().splitlines()


SNAPSHOT = describe()
LISTINGS = ["tasks", "mixers", "algorithms", "shifts", "caches", "probes", "reproductions"]


@pytest.mark.parametrize("name", LISTINGS)
def test_listings_fit_80_columns_and_wrapped_details_keep_their_indent(name):
    lines = rendered(listings.listing(SNAPSHOT, name))
    assert max(len(line) for line in lines) <= WIDTH
    entries = [line for line in lines if line and not line.startswith(" ")]
    details = [line for line in lines if line.startswith("    ")]
    assert details, "a listing without details"
    # A detail that wraps continues indented: no unindented line may follow a detail line.
    for before, after in itertools.pairwise(lines):
        if before.startswith("    ") and after and not after.startswith(" "):
            assert after in entries and ":" in after, f"wrapped detail lost its indent: {after!r}"


def points(shift: str, means: dict[str, float], ks=(1, 5, 10, 20)) -> list[CurvePoint]:
    return [
        CurvePoint(learner, "error", shift, k, mean, mean - 0.01, mean + 0.01, 128)
        for learner, mean in means.items()
        for k in ks
    ]


def evaluation_with_every_shift() -> Evaluation:
    curves, differences = [], []
    for shift in ["none", *STANDARD_SHIFTS]:
        curves += points(shift, dict(zip(LEARNERS, (0.9, 0.0, 0.5, 0.6, 0.01, 0.02), strict=True)))
        for k in (1, 5, 10, 20):
            mean = -1367.73 if (shift, k) == ("noisy_targets", 5) else 0.9
            half = 1749.0 if mean < -1 else 0.1
            differences.append(
                PairedDifference(
                    "model", "least_squares", "error", shift, k, mean, mean - half, mean + half, 128
                )
            )
    return Evaluation(curves, differences)


def test_evaluation_tables_fit_80_columns_show_every_k_and_break_headers_between_words():
    config = tiny_config(task={"n_dims": 5, "n_points": 21})
    lines = rendered(render.evaluation_tables(evaluation_with_every_shift(), config))
    assert max(len(line) for line in lines) <= WIDTH
    text = "\n".join(lines)
    header = next(line for line in lines if "┃ shift" in line and "k=" in line)
    assert all(f" k={k} " in header for k in (1, 5, 10, 20))  # the differences keep all four
    assert "least_squa" not in text.replace("least_squares", "")  # never split mid-word
    assert "least_" in text and "squares" in text
    assert "-1368†" in text and "†: a heavy-tailed mean" in text


def test_the_runs_table_fits_80_columns_and_details_print_readable_numbers():
    entry = RunEntry(
        name="sweep/trial-003-lr1e-03-d_model64",
        path=Path("runs/sweep/trial-003"),
        status="completed",
        created=datetime(2026, 12, 3).astimezone(),
        updated=datetime(2026, 12, 3).astimezone(),
        task="linear_regression",
        n_dims=5,
        n_points=21,
        model="mamba, mamba, softmax, mamba",
        n_params=1_234_567,
        steps=2500,
        total_steps=2500,
        headline=0.9861135466639057,
        headline_metric="error",
    )
    lines = rendered([render.runs_table([entry], Path("runs"))])
    assert max(len(line) for line in lines) <= WIDTH
    assert "0.986 err" in "\n".join(lines) and "1,234,567" in "\n".join(lines)
    details = "\n".join(rendered([render.run_details(entry)]))
    assert "0.9861" in details and "0.9861135" not in details and "1,234,567" in details


def test_the_listing_snapshot_is_the_registries_own():
    """The listings print a snapshot (no torch to import); it must say what is registered."""
    assert read() == SNAPSHOT, (
        f"{SNAPSHOT_FILE.name} is out of date with the registries: run `make listings` "
        "(python -m iclab.listing)"
    )
