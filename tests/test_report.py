"""``iclab report``: one self-contained HTML page per run, checked as text and in a real browser."""

from __future__ import annotations

import base64
import html
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from browser import missing_browser, open_headless
from conftest import latest_evaluation, tiny_config
from iclab.cli import app
from iclab.errors import UserError
from iclab.evaluation.curves import (
    PairedDifference,
    read_curves_csv,
    reported_ks,
    write_curves_csv,
    write_differences_csv,
)
from iclab.run import RunDir, evaluate_run, train_run, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHIFT = "scale_inputs(factor=2)"


class Page(HTMLParser):
    """The parts of a page the tests look at: image sources, headings, and table cells."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self.tables: list[list[list[tuple[str, str]]]] = []  # table → row → (text, class)
        self._heading: list[str] | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        elif tag in ("h2", "h3"):
            self._heading = []
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._cell_class = [], attributes.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._cell_class))
            self._cell = None

    def handle_data(self, data):
        for part in (self._heading, self._cell):
            if part is not None:
                part.append(data)

    def table_with_header(self, first: str) -> list[list[tuple[str, str]]]:
        return next(table for table in self.tables if table[0][0][0] == first)

    def tables_with_header(self, first: str) -> list[list[list[tuple[str, str]]]]:
        return [table for table in self.tables if table[0][0][0] == first]


def read_page(path: Path) -> Page:
    return Page(path.read_text())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train_run(tiny_config(), run, show_progress=False)
    return run


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(trained_run, run)
    evaluate_run(run)
    return run


@pytest.fixture
def shifted_run(evaluated_run, tmp_path) -> Path:
    """The evaluated run with a second shift (listed first in the file) and hand-made paired
    differences: one interval above 0, one below, one across 0."""
    run = tmp_path / "shifted"
    shutil.copytree(evaluated_run, run)
    evaluation = latest_evaluation(run)
    points = read_curves_csv(evaluation / "curves.csv")
    shifted = [replace(point, shift=SHIFT) for point in points if point.shift == "none"]
    write_curves_csv(shifted + points, evaluation / "curves.csv")
    row = {"metric": "error", "shift": "none", "k": 3, "reference": "model", "n_prompts": 64}
    write_differences_csv(
        [
            PairedDifference(learner="least_squares", mean=-0.5, ci_low=-0.6, ci_high=-0.4, **row),
            PairedDifference(learner="averaging", mean=0.2, ci_low=0.1, ci_high=0.3, **row),
            PairedDifference(
                **{**row, "shift": SHIFT}, learner="averaging", mean=0.1, ci_low=-0.1, ci_high=0.3
            ),
        ],
        evaluation / "differences.csv",
    )
    return run


def shifts_of(run: Path) -> list[str]:
    points = read_curves_csv(latest_evaluation(run) / "curves.csv")
    return list(dict.fromkeys(p.shift for p in points))


def test_report_embeds_every_figure_as_a_png_and_references_nothing_external(evaluated_run):
    path = write_report(evaluated_run)
    assert path == evaluated_run / "report.html"
    text = path.read_text()
    for external in ('src="http', 'href="http', "<script src", "url("):
        assert external not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    images = read_page(path).images
    assert len(images) == 1 + len(shifts_of(evaluated_run))  # training loss + a figure per shift
    for source in images:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert base64.b64decode(source[len(prefix) :], validate=True).startswith(PNG_SIGNATURE)


def test_report_shows_the_config_the_checkpoints_and_the_learners_at_the_reported_ks(
    evaluated_run,
):
    page_text = write_report(evaluated_run).read_text()
    assert html.escape(RunDir(evaluated_run).config_path.read_text()) in page_text
    page = Page(page_text)

    checkpoints = page.table_with_header("directory")
    assert [[text for text, _ in row] for row in checkpoints[1:]] == [
        ["step-0000020", "20", checkpoints[1][2][0], "yes", "yes"],
        ["step-0000030", "30", checkpoints[2][2][0], "yes", "yes"],
    ]
    assert all(float(row[2][0]) > 0 for row in checkpoints[1:])

    points = [
        p
        for p in read_curves_csv(latest_evaluation(evaluated_run) / "curves.csv")
        if p.shift == "none"
    ]
    ks = reported_ks(points, n_dims=3)
    learners = page.tables_with_header("learner")[0]
    assert [text for text, _ in learners[0]] == ["learner", *(f"k={k}" for k in ks)]
    assert [row[0][0] for row in learners[1:]] == ["model", "least_squares", "averaging"]
    model_at_3 = next(p for p in points if p.learner == "model" and p.k == 3)
    half_width = (model_at_3.ci_high - model_at_3.ci_low) / 2
    assert learners[1][ks.index(3) + 1][0] == f"{model_at_3.mean:.3f} ± {half_width:.3f}"
    peak = RunDir(evaluated_run).read_info()["peak_rss_mb"]
    assert f"peak memory {peak:,.0f} MB" in page_text  # the Environment facts


def test_each_shift_gets_a_figure_and_a_table_with_the_training_distribution_first(shifted_run):
    page = read_page(write_report(shifted_run))
    assert len(page.images) == 3  # training loss, training distribution, the shift
    evaluation = page.headings[page.headings.index("Evaluation") :]
    assert evaluation[1:3] == ["training distribution", SHIFT]
    assert len(page.tables_with_header("learner")) == 2


def test_paired_differences_flag_only_intervals_that_exclude_zero(shifted_run):
    page = read_page(write_report(shifted_run))
    none, shift = page.tables_with_header("learner − reference")
    column = [text for text, _ in none[0]].index("k=3")
    cells = {row[0][0]: row[column] for row in none[1:]}
    assert cells["least_squares − model"] == ("-0.500 * [-0.600, -0.400]", "better")
    assert cells["averaging − model"] == ("+0.200 * [+0.100, +0.300]", "worse")
    across_zero = {row[0][0]: row[column] for row in shift[1:]}["averaging − model"]
    assert across_zero == ("+0.100 [-0.100, +0.300]", "")


def test_strings_from_the_run_are_escaped(evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    evaluation = latest_evaluation(run)
    points = read_curves_csv(evaluation / "curves.csv")
    hostile = '<img src="x" onerror="alert(1)">'
    write_curves_csv([replace(p, learner=hostile) for p in points], evaluation / "curves.csv")
    text = write_report(run).read_text()
    assert hostile not in text
    assert html.escape(hostile) in text
    assert len(Page(text).images) == 1 + len(shifts_of(run))


def test_a_trained_but_unevaluated_run_gets_a_report_that_says_not_evaluated(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    text = write_report(run).read_text()
    assert "Not evaluated" in text
    page = Page(text)
    assert len(page.images) == 1  # the training loss only
    assert page.table_with_header("directory")[1][0][0] == "step-0000020"


def test_an_untrained_run_gets_a_report_that_says_so(tmp_path):
    RunDir(tmp_path / "run").write_config(tiny_config())
    text = write_report(tmp_path / "run").read_text()
    assert "Not trained yet" in text and "Not evaluated" in text and "No checkpoints" in text
    assert Page(text).images == []


def test_a_directory_that_is_not_a_run_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_cli_report_writes_the_file_and_prints_its_path(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert str(run / "report.html") in result.output
    assert (run / "report.html").stat().st_size > 10_000
    result = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "not a run directory" in result.output


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = missing_browser()
    if reason is not None:
        pytest.skip(f"headless Chromium unavailable: {reason}")
    with open_headless(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


def load(driver, path: Path) -> tuple[list[dict], list[list]]:
    """Open a file; return its SEVERE console entries and each image's [complete, naturalWidth]."""
    driver.get_log("browser")  # drop whatever an earlier page left
    driver.get(path.resolve().as_uri())
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    images = driver.execute_script(
        "return Array.from(document.images, image => [image.complete, image.naturalWidth])"
    )
    return severe, images


def test_report_renders_in_chromium_with_no_console_errors_and_every_image_decoded(
    browser, shifted_run, trained_run, tmp_path
):
    severe, images = load(browser, write_report(shifted_run))
    assert severe == []
    assert len(images) == 3
    assert all(complete and width > 0 for complete, width in images)

    unevaluated = tmp_path / "unevaluated"
    shutil.copytree(trained_run, unevaluated)
    severe, images = load(browser, write_report(unevaluated))
    assert severe == []
    assert len(images) == 1 and images[0][0] and images[0][1] > 0


def test_an_external_reference_would_show_up_as_a_console_error(browser, shifted_run, tmp_path):
    """The check above can fail: the page's policy blocks anything that is not embedded."""
    page = write_report(shifted_run).read_text()
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.replace("</main>", '<img src="https://example.com/x.png"></main>'))
    severe, images = load(browser, leaky)
    assert any("Content Security Policy" in entry["message"] for entry in severe)
    assert len(images) == 4 and images[-1][1] == 0
