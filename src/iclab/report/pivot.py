"""The one learner × k pivot that the console tables and the HTML report both render."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from iclab.evaluation.curves import CurvePoint, PairedDifference

TRAINING_SHIFT = "none"
Row = TypeVar("Row", CurvePoint, PairedDifference)


def row_label(row: CurvePoint | PairedDifference) -> str:
    """A curve's learner, or ``learner − reference`` for a paired difference."""
    if isinstance(row, PairedDifference):
        return f"{row.learner} − {row.reference}"
    return row.learner


def pivot(rows: Iterable[Row]) -> dict[str, dict[int, Row]]:
    """Rows by label (learner, or learner − reference) in order of appearance, then by k."""
    table: dict[str, dict[int, Row]] = {}
    for row in rows:
        table.setdefault(row_label(row), {})[row.k] = row
    return table


def by_shift(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by shift: the training distribution first, then in order of appearance."""
    groups: dict[str, list[Row]] = {}
    for row in sorted(rows, key=lambda row: row.shift != TRAINING_SHIFT):
        groups.setdefault(row.shift, []).append(row)
    return groups


def excludes_zero(row: PairedDifference) -> bool:
    return row.ci_low > 0 or row.ci_high < 0


def last_k_up_to(rows: Sequence[CurvePoint], k: int) -> int:
    """The largest scored k up to ``k`` (shifts such as orthogonal_query stop early)."""
    return max((p.k for p in rows if p.k <= k), default=min(p.k for p in rows))
