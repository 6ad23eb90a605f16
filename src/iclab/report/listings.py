"""The listings (``iclab tasks``, ``models``, ...) as the terminal shows them: rendered from the
snapshot of the registries (``iclab.listing``), so this module imports rich alone."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text


def plain(text: str) -> Text:
    """Text printed as it is (no markup, no highlighting)."""
    return Text(text)


def indented(text: str) -> Padding:
    """A detail line of a listing: indented by four, and wrapped under that indent."""
    return Padding(Text(text), (0, 0, 0, 4), expand=False)


LISTING_HEADERS = {
    "tasks": "[bold]task families[/] (task.name), each with its defaults and options",
    "mixers": "[bold]mixers[/] (model.mixer, or one per block in model.layers; options as in "
    "linear_attention(form=chunked))\nstate: floats carried between tokens per layer and "
    "sequence, E = d_model, H = n_heads, t = tokens so far; the numbers are for E=256, H=8",
    "algorithms": "[bold]algorithms[/] (eval.algorithms; options as in knn(k=5))",
    "shifts": "[bold]shifts[/] (iclab eval RUN --shift NAME, or eval.shifts; options as in "
    "scale_inputs(factor=2); a+b composes two)",
    "caches": "[bold]KV-cache policies[/] (iclab eval RUN --cache SPEC, iclab longctx RUN "
    "--policies ...; options as in snapkv(budget=64)); budgets count entries per head and layer",
    "probes": "[bold]probes[/] (iclab probe RUN --probe NAME; options as in gd_alignment(steps=2))",
    "reproductions": "[bold]reproductions[/] (iclab reproduce NAME --scale smoke|cpu|paper)",
}


def listing(snapshot: dict[str, Any], section: str) -> list[RenderableType]:
    """One listing of ``iclab.listing``'s snapshot: a header, then every entry's name and
    summary with its details indented beneath."""
    lines: list[RenderableType] = [LISTING_HEADERS[section], ""]
    for entry in snapshot[section]:
        lines.append(f"[bold]{escape(entry['name'])}[/]{escape(entry['title'])}")
        lines += [indented(detail) for detail in entry["details"]]
        lines.append("")
    if section == "mixers":
        lines.append(plain(f"around every mixer (model.*): {snapshot['around_mixers']}"))
    if section == "shifts":
        allowed = ", ".join(snapshot["standard_shifts"])
        lines.append(plain(f"all: {allowed} (those the task allows)"))
    return lines
