"""What every probe provides: a named, optioned analysis of a trained model on fresh prompts,
returning headline numbers, tables and figures.

Probes are named by specs like algorithms and shifts (``gd_alignment(steps=1)``) and run by
``iclab probe RUN --probe NAME``, which writes ``RUN/probes/<spec>/``: ``summary.json``, one CSV
per table and one PNG per figure (``iclab.probes.run_probe``).
"""

from __future__ import annotations

import textwrap
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict

from iclab.errors import ConfigError
from iclab.models import InContextModel
from iclab.registry import Registry
from iclab.specs import Spec, resolve_spec
from iclab.tasks.base import Task


class ProbeOptions(BaseModel):
    """Options of a probe; subclass per probe and give every field a ``description``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


@dataclass
class ProbeResult:
    """``summary``: the headline numbers (and short verdict strings); ``tables``: name → rows
    (dicts with the same keys, written as CSV); ``figures``: name → matplotlib figure."""

    summary: dict[str, float | int | str] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)


class Probe(ABC):
    """A probe of a trained in-context learner. Subclasses set ``Options``, ``paper`` and
    implement ``run``; ``check_applies`` raises a ValueError saying why a model or task does not
    suit the probe (e.g. attention analysis on a model without softmax attention)."""

    name: ClassVar[str] = "unregistered"  # set by @register_probe
    Options: ClassVar[type[ProbeOptions]] = ProbeOptions
    paper: ClassVar[str] = ""

    def __init__(self, options: ProbeOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.spec = str(Spec(type(self), self.options))  # canonical text: names its files
        self.on_progress: Callable[[int, int], None] | None = None

    def report(self, done: int, total: int) -> None:
        """Tell whoever runs the probe (``on_progress``, set by ``probe_run``) that ``done`` of
        ``total`` units of its work are finished."""
        if self.on_progress is not None:
            self.on_progress(done, total)

    def check_applies(self, model: InContextModel, task: Task) -> None:  # noqa: B027 (a hook)
        """Raise a ValueError naming what the probe needs, when ``model`` or ``task`` lacks it."""

    @abstractmethod
    def run(
        self, model: InContextModel, task: Task, n_points: int, generator: torch.Generator
    ) -> ProbeResult:
        """Probe ``model`` (in eval mode) on fresh prompts of ``task`` with ``n_points`` examples
        drawn from ``generator`` (on the model's device)."""


def require_softmax_attention(model: InContextModel, probe: str) -> None:
    """A ``ConfigError`` naming ``probe`` and the model's mixers when no layer is softmax
    attention (the probes that read attention maps)."""
    mixers = [block.mixer for block in model.backbone.blocks]
    if not any(hasattr(mixer, "attention_weights") for mixer in mixers):
        names = ", ".join(mixer.name for mixer in mixers)
        raise ConfigError(f"{probe} needs softmax attention; this model's mixers are {names}")


def explain(figure: Figure, words: str) -> Figure:
    """``figure`` with ``words`` beneath it, wrapped to its width: what its keys and axes mean,
    so a figure read alone (in a report, a paper draft) says what it shows."""
    width = max(40, int(figure.get_figwidth() * 13))  # characters a line fits at 8 points
    figure.text(0.01, -0.02, textwrap.fill(words, width), ha="left", va="top", fontsize=8)
    return figure


PROBES: Registry[type[Probe]] = Registry("probe")
register_probe = PROBES.register


def build_probe(spec: str | Spec) -> Probe:
    """The probe a spec names, with validated options; a clear error otherwise. Its ``spec`` is
    the canonical text, which names its directory and its prompts' seed stream."""
    resolved = resolve_spec(spec, PROBES, what="probe")
    return resolved.cls(resolved.options)
