"""Progress of long work, visible in a terminal and in a log file alike.

In a terminal it is a rich progress bar. Elsewhere (output piped to a file, CI, a job
scheduler's log) rich's live bar shows nothing, so a plain line is printed every ``every``
seconds and once at the end instead: what is being done, how far it is, the fields the caller
reports (a loss, a rate) and the time left. The line comes on time even while one unit of work
runs for minutes (a slow yardstick on a batch): a heartbeat thread prints it when no tracker
has printed one for ``every`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_SECONDS = 10.0


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h01m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Tracker:
    """What the work reports to: ``advance`` (by steps), ``update`` (absolute position, a new
    description, field values)."""

    last_any_line = 0.0  # when any tracker last printed a plain line (nested work counts)
    lock = threading.Lock()  # the heartbeat thread and the work both print

    def __init__(
        self,
        description: str,
        total: int,
        console: Console,
        fields: Sequence[str],
        every: float,
        progress: Progress | None,
        completed: int = 0,
        count: bool = True,
    ) -> None:
        self.description, self.total, self.completed = description, total, completed
        self.count = count
        self.console, self.every, self.progress = console, every, progress
        self.values: dict[str, Any] = dict.fromkeys(fields, "-")
        self.started = self.last_line = time.perf_counter()
        self.last_printed: int | None = None  # the position the last plain line showed
        self.start = completed
        if progress is not None:
            self.task = progress.add_task(
                description, total=total, completed=completed, **self.values
            )

    def advance(self, steps: int = 1, **fields: Any) -> None:
        self.update(self.completed + steps, **fields)

    def update(
        self,
        completed: int | None = None,
        description: str | None = None,
        total: int | None = None,
        **fields: Any,
    ) -> None:
        if total is not None:
            self.total = total
        if completed is not None:
            self.completed = completed
        if description is not None:
            self.description = description
        self.values.update(fields)
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=self.completed,
                total=self.total,
                description=self.description,
                **self.values,
            )
        elif time.perf_counter() - self.last_line >= self.every:
            self.print_line(unless_printed_within=self.every)

    def beat(self) -> float:
        """Print the plain line if no tracker has printed one for ``every`` seconds; return the
        seconds until the next line is due."""
        with Tracker.lock:
            quiet = time.perf_counter() - max(self.last_line, Tracker.last_any_line)
            if quiet < self.every:
                return self.every - quiet
            self.write_line()
            return self.every

    def print_line(self, unless_printed_within: float = 0.0) -> None:
        """The plain line: ``train: 120/500 (24%), loss 0.31, 40s elapsed, about 2m07s left``;
        skipped if this tracker printed one in the last ``unless_printed_within`` seconds, a
        check made under the lock so that the work and the heartbeat never both print a line
        that falls due."""
        with Tracker.lock:
            if time.perf_counter() - self.last_line >= unless_printed_within:
                self.write_line()

    def write_line(self) -> None:
        """``print_line`` for a caller that holds ``Tracker.lock``."""
        now = time.perf_counter()
        elapsed, done = now - self.started, self.completed - self.start
        share = f"{self.completed / self.total:.0%}" if self.total else None
        if self.count:
            position = f"{self.completed}/{self.total}" + (f" ({share})" if share else "")
        else:
            position = share or "-"
        parts = [f"{self.description}: {position}"]
        parts += [f"{name} {value}" for name, value in self.values.items() if value != "-"]
        parts.append(f"{duration(elapsed)} elapsed")
        if done > 0 and self.completed < self.total:
            parts.append(f"about {duration(elapsed / done * (self.total - self.completed))} left")
        self.console.print(", ".join(parts), highlight=False, markup=False, soft_wrap=True)
        self.last_line, self.last_printed = now, self.completed
        Tracker.last_any_line = now


@contextmanager
def progress(
    description: str,
    total: int,
    *,
    console: Console | None = None,
    enabled: bool = True,
    fields: Sequence[str] = (),
    completed: int = 0,
    transient: bool = False,
    every: float | None = None,
    count: bool = True,
) -> Iterator[Tracker]:
    """Track ``total`` steps of work: a bar in a terminal, plain lines in a log (the last one
    when the work ends, unless ``transient``); nothing at all unless ``enabled``. ``fields``
    name values the work reports (``tracker.update(loss="0.31")``), shown after the count.
    Without ``count`` only the share done is shown: for work counted in units that mean
    nothing to a reader (estimated time, weighted steps)."""
    console = console or Console(stderr=True)
    every = PLAIN_EVERY_SECONDS if every is None else every
    if not enabled:
        yield Tracker(
            description, total, console, fields, every=float("inf"), progress=None, count=count
        )
        return
    if not console.is_terminal:
        tracker = Tracker(
            description,
            total,
            console,
            fields,
            every,
            progress=None,
            completed=completed,
            count=count,
        )
        with heartbeat(tracker):
            yield tracker
        if not transient and tracker.last_printed != tracker.completed:
            tracker.print_line()
        return
    columns = [
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if count else TaskProgressColumn(),
        *(TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=transient) as bar:
        yield Tracker(
            description,
            total,
            console,
            fields,
            every,
            progress=bar,
            completed=completed,
            count=count,
        )


@contextmanager
def heartbeat(tracker: Tracker) -> Iterator[None]:
    """Print ``tracker``'s plain line whenever ``every`` seconds pass without one, from a daemon
    thread, until the work ends. ``every = 0`` (a line at every update) needs no heartbeat."""
    if not 0 < tracker.every < float("inf"):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        wait = tracker.every
        while not stop.wait(wait):
            wait = tracker.beat()

    thread = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
