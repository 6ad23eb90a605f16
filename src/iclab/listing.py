"""What ``iclab tasks | models | algorithms | shifts | caches | probes | reproduce --list``
print, kept as a snapshot (``listing.json``) so that listing answers without importing torch
(two seconds here).

``describe()`` reads every registry (and imports torch to size the mixers' states);
``python -m iclab.listing`` writes the snapshot from it, and a test fails, naming that command,
whenever the snapshot and the registries disagree, so a new task, mixer or algorithm can never
be missing from the listings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("listing.json")
Entry = dict[str, Any]  # {"name", "title" (after the name), "details": [lines]}


def first_line(text: str | None) -> str:
    """A docstring's summary: its first paragraph on one line."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def option_lines(options: type) -> list[str]:
    """``name=default: description`` for every field of an ``Options`` class."""
    return [
        f"{field}={info.default!r}" + (f": {info.description}" if info.description else "")
        for field, info in options.model_fields.items()
    ]


def tasks() -> list[Entry]:
    from iclab.kinds import kind_of
    from iclab.tasks import TASKS

    entries = []
    for name, family in TASKS:
        sizes = kind_of(family.kind).describe_sizes(family.default_n_dims, family.default_n_points)
        details = [f"paper: {family.paper}", f"defaults: {sizes}", *option_lines(family.Options)]
        details.append(f"yardsticks: {', '.join(family.yardsticks) or '-'}")
        entries.append(
            {
                "name": name,
                "title": f"({family.kind}): {first_line(family.__doc__)}",
                "details": details,
            }
        )
    return entries


MIXER_WIDTH, MIXER_HEADS, MIXER_LENGTHS = 256, 8, (64, 1024)  # the state sizes listed


def mixers() -> list[Entry]:
    import torch

    from iclab.models.mixers import MIXERS

    entries = []
    for name, cls in MIXERS:
        with torch.device("meta"):
            mixer = cls(MIXER_WIDTH, MIXER_HEADS)
        sizes = ", ".join(f"t={t}: {mixer.state_size(t):,}" for t in MIXER_LENGTHS)
        details = [
            f"paper: {cls.paper}",
            f"forms: {', '.join(cls.forms)}",
            f"state: {cls.state_formula} ({sizes})",
            f"learning rate (train.lr: auto): {cls.learning_rate:g}",
            *option_lines(cls.Options),
        ]
        entries.append({"name": name, "title": f": {first_line(cls.__doc__)}", "details": details})
    return entries


def around_mixers() -> str:
    from iclab.models import ModelConfig

    fields = ModelConfig.model_fields
    return "; ".join(
        f"{field}: {fields[field].description}" for field in ("mlp_ratio", "norm", "target_params")
    )


def algorithms() -> list[Entry]:
    from iclab.algorithms import ALGORITHMS
    from iclab.algorithms.base import describe_applies_to

    return [
        {
            "name": name,
            "title": f": {first_line(cls.__doc__)}",
            "details": [
                f"applies to: {describe_applies_to(cls)}",
                *(option_lines(cls.Options) or ["options: none"]),
            ],
        }
        for name, cls in ALGORITHMS
    ]


def shifts() -> list[Entry]:
    from iclab.evaluation.shifts import SHIFTS

    return [
        {
            "name": name,
            "title": f": {first_line(cls.__doc__)}",
            "details": option_lines(cls.Options),
        }
        for name, cls in SHIFTS
    ]


def standard_shifts() -> list[str]:
    from iclab.evaluation.shifts import STANDARD_SHIFTS

    return list(STANDARD_SHIFTS)


def caches() -> list[Entry]:
    from iclab.models.caches import POLICIES

    return [
        {
            "name": name,
            "title": f": {first_line(cls.__doc__)}",
            "details": [f"paper: {cls.paper}", *(option_lines(cls.Options) or ["options: none"])],
        }
        for name, cls in POLICIES
    ]


def probes() -> list[Entry]:
    from iclab.probes import PROBES

    return [
        {
            "name": name,
            "title": f": {first_line(cls.__doc__)}",
            "details": [f"paper: {cls.paper}", *option_lines(cls.Options)],
        }
        for name, cls in PROBES
    ]


def reproductions() -> list[Entry]:
    from iclab.reproductions import REPRODUCTIONS
    from iclab.reproductions.budget import ESTIMATE_GPU, gpu_hours

    return [
        {
            "name": name,
            "title": f" ({cls.paper}; about {cls.cpu_minutes:g} min at cpu scale, paper scale "
            f"≈ {gpu_hours(cls.trainings('paper').values()):.2g} {ESTIMATE_GPU} hours)",
            "details": [cls.claim],
        }
        for name, cls in REPRODUCTIONS
    ]


def describe() -> dict[str, Any]:
    """Every listing, from the registries themselves."""
    return {
        "tasks": tasks(),
        "mixers": mixers(),
        "around_mixers": around_mixers(),
        "algorithms": algorithms(),
        "shifts": shifts(),
        "standard_shifts": standard_shifts(),
        "caches": caches(),
        "probes": probes(),
        "reproductions": reproductions(),
    }


def read() -> dict[str, Any]:
    """The snapshot the listings print (no torch)."""
    return json.loads(SNAPSHOT.read_text())


def write() -> None:
    from iclab.io import atomic_write_text

    atomic_write_text(SNAPSHOT, json.dumps(describe(), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {SNAPSHOT}")
