"""The run registry: an SQLite index (``ROOT/index.sqlite``) of the run directories under a
runs root, so that dozens of runs can be listed, filtered and sorted at a glance.

The index lives in the runs root the user lists (``iclab runs --root ROOT``, default ``runs``)
and only ``iclab runs`` writes it: training and evaluating write their run directory alone.
The index is a cache. The run directories stay the source of truth: the index can be deleted at
any time, and a corrupt, foreign or older index is rebuilt from them with a warning. A run is any
directory under ROOT (found recursively, skipping hidden ones) that holds a ``config.yaml``; its
name is its path relative to ROOT (``quickstart``, ``sweep1/trial-0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from iclab.config import build_config
from iclab.errors import ConfigError, RunNotFoundError, did_you_mean
from iclab.evaluation.curves import read_curves_csv
from iclab.io import read_yaml
from iclab.metrics import target_reached
from iclab.registry import UnknownNameError
from iclab.run.directory import RunDir
from iclab.tasks import TASKS

__all__ = ["INDEX_NAME", "RunEntry", "get_run", "list_runs", "rebuild", "sync"]

INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = 2  # PRAGMA user_version; bump it when the table changes (old indexes are rebuilt)
# What an entry reads; a new evaluation renames its directory into eval/, which changes eval's
# own time, and so does a legacy eval/curves.csv rewritten in place.
SOURCES = ("config.yaml", "run.json", "metrics.jsonl", "eval")
METRICS_TAIL_BYTES = 64 * 1024
MODEL = "model"  # the learner a run's own model is evaluated as
READ_ERRORS = (ConfigError, yaml.YAMLError, OSError, ValueError, KeyError, TypeError)

T = TypeVar("T")


@dataclass(frozen=True)
class RunEntry:
    """What the index knows about one run. ``headline`` is the first learner's (the model's)
    metric at the largest k on the training distribution (shift "none"), None until evaluated;
    ``status`` is run.json's status, "new" before training starts, or "broken" (then
    ``problem`` says which file is unreadable and why)."""

    name: str
    path: Path
    status: str
    created: datetime
    updated: datetime
    task: str | None = None
    n_dims: int | None = None  # None for token tasks, which have no input dimension
    n_points: int | None = None
    model: str | None = None
    n_params: int | None = None
    steps: int = 0
    total_steps: int | None = None
    stopped: str | None = None  # train.stop_at's target, reached at ``steps``
    headline: float | None = None
    headline_metric: str | None = None
    config_hash: str | None = None
    problem: str | None = None

    @property
    def task_label(self) -> str:
        """``linear_regression d=5 n=40``: the family and its size."""
        sizes = [f"d={self.n_dims}"] if self.n_dims is not None else []
        sizes += [f"n={self.n_points}"] if self.n_points is not None else []
        return " ".join([self.task or "-", *sizes])


COLUMNS = tuple(field.name for field in fields(RunEntry))
SCHEMA = """
CREATE TABLE runs (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    task TEXT,
    n_dims INTEGER,
    n_points INTEGER,
    model TEXT,
    n_params INTEGER,
    steps INTEGER NOT NULL,
    total_steps INTEGER,
    stopped TEXT,
    headline REAL,
    headline_metric TEXT,
    config_hash TEXT,
    problem TEXT,
    fingerprint TEXT NOT NULL
)
"""
TABLE_COLUMNS = (*COLUMNS, "fingerprint")  # fingerprint: the sources' mtimes and sizes
UPSERT = (
    f"INSERT INTO runs ({', '.join(TABLE_COLUMNS)}) VALUES ({', '.join('?' * len(TABLE_COLUMNS))})"
    " ON CONFLICT(name) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in TABLE_COLUMNS if column != "created")
    # a resume rewrites every source file, so keep the earliest creation time seen
    + ", created = MIN(runs.created, excluded.created)"
)


# --- public API -------------------------------------------------------------------------------


def sync(root: Path) -> None:
    """Bring the index up to date: index new run directories, re-read those whose files changed
    since (by mtime and size), and drop, with a warning each, runs whose directory was removed."""
    root = _runs_root(root)
    _using_index(root, lambda connection: _sync_index(connection, root))


def rebuild(root: Path) -> None:
    """Delete the index and index every run directory afresh."""
    root = _runs_root(root)
    _delete_index(root / INDEX_NAME)
    sync(root)


def list_runs(
    root: Path,
    task: str | None = None,
    model: str | None = None,
    status: str | None = None,
    sort: str = "updated",
    descending: bool = True,
    limit: int | None = None,
) -> list[RunEntry]:
    """The runs under ``root`` (synced first), filtered by task family name, a substring of the
    model description (``softmax``, ``4 ×``) and status, sorted by any ``RunEntry`` field
    (missing values last, ties by name)."""
    if sort not in COLUMNS:
        raise ConfigError(f"cannot sort runs by {sort!r}; sort by one of: {', '.join(COLUMNS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    root = _runs_root(root)
    conditions, parameters = [], []
    for condition, value in (
        ("task = ?", task),
        ("instr(lower(model), lower(?)) > 0", model),
        ("status = ?", status),
    ):
        if value is not None:
            conditions.append(condition)
            parameters.append(value)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    order = f"{sort} IS NULL, {sort} {'DESC' if descending else 'ASC'}, name"
    query = f"SELECT {', '.join(COLUMNS)} FROM runs {where} ORDER BY {order} LIMIT ?"

    def select(connection: sqlite3.Connection) -> list[RunEntry]:
        _sync_index(connection, root)
        rows = connection.execute(query, (*parameters, limit or -1)).fetchall()
        return [_from_row(row) for row in rows]

    return _using_index(root, select)


def get_run(root: Path, name: str) -> RunEntry:
    """One run by name (its path under ``root``; the run's own path is accepted too)."""
    root = _runs_root(root)
    given = Path(name)
    name = given.as_posix()  # alpha/ and ./alpha are alpha
    if given.is_dir() and given.resolve().is_relative_to(root.resolve()):
        name = given.resolve().relative_to(root.resolve()).as_posix()

    def lookup(connection: sqlite3.Connection) -> tuple[RunEntry | None, list[str]]:
        _sync_index(connection, root)
        query = f"SELECT {', '.join(COLUMNS)} FROM runs WHERE name = ?"
        row = connection.execute(query, (name,)).fetchone()
        names = [found for (found,) in connection.execute("SELECT name FROM runs ORDER BY name")]
        return (None if row is None else _from_row(row)), names

    entry, names = _using_index(root, lookup)
    if entry is not None:
        return entry
    hint = did_you_mean(name, names, most=3, cutoff=0.5) or f" (runs: {len(names)})"
    raise UnknownNameError(f"no run {name!r} in {root}{hint}")


# --- reading run directories ------------------------------------------------------------------


def _runs_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise RunNotFoundError(
            f"no runs directory {root}: train a run first, or point --root at the directory "
            "that holds your runs"
        )
    if (root / "config.yaml").exists():
        raise ConfigError(
            f"{root} is a run directory; give the directory that holds runs, e.g. {root.parent}"
        )
    return root


def _find_run_dirs(root: Path) -> dict[str, Path]:
    """Run name → directory, for every non-hidden directory under ``root`` with a config.yaml.
    Runs do not nest, so a run's own subdirectories (checkpoints, tb, ...) are not walked."""
    found = {}
    for directory, subdirectories, files in os.walk(root):
        path = Path(directory)
        if "config.yaml" in files and path != root:
            found[path.relative_to(root).as_posix()] = path
            subdirectories.clear()
        else:
            subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
    return found


def _fingerprint(path: Path) -> str:
    """The mtimes and sizes of the files an entry is read from: a change means re-read."""
    stamps = []
    for source in SOURCES:
        with contextlib.suppress(FileNotFoundError):
            stat = (path / source).stat()
            stamps.append(f"{source}:{stat.st_mtime_ns}:{stat.st_size}")
    return ";".join(stamps)


def _describe_run(name: str, path: Path) -> tuple[RunEntry, str]:
    """The entry for one run directory and the fingerprint it was read at; never raises: an
    unreadable run is an entry with status "broken"."""
    stamp = _fingerprint(path)  # before reading, so a file changed meanwhile is re-read next sync
    mtimes = [int(part.split(":")[1]) / 1e9 for part in stamp.split(";") if part]
    known: dict[str, Any] = {
        "name": name,
        "path": path,
        "created": datetime.fromtimestamp(min(mtimes, default=time.time())).astimezone(),
        "updated": datetime.fromtimestamp(max(mtimes, default=time.time())).astimezone(),
    }
    try:
        return RunEntry(**{**known, **_read_run(RunDir(path))}), stamp
    except _BrokenRunError as error:
        return RunEntry(**known, status="broken", problem=str(error)), stamp


class _BrokenRunError(Exception):
    """A file of a run directory cannot be read; the message names it."""


def _reading(label: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except READ_ERRORS as error:
        raise _BrokenRunError(f"{label}: {error}") from None


def _read_run(run: RunDir) -> dict[str, Any]:
    try:
        config = build_config(read_yaml(run.config_path), source="config.yaml")
    except ConfigError as error:  # its message already names config.yaml and the field
        raise _BrokenRunError(str(error)) from None
    info = _reading("run.json", run.read_info)
    if not isinstance(info, dict):
        raise _BrokenRunError(f"run.json: expected a JSON object, got {type(info).__name__}")
    status = str(info.get("status", "new"))
    if status == "running" and _process_gone(info):
        status = "stopped"  # its process ended without saying how (killed, out of memory)
    if status == "completed" and isinstance(info.get("steps"), int):
        steps = info["steps"]
    else:  # while training, run.json still holds the steps of an earlier, resumed-from run
        steps = _reading("metrics.jsonl", lambda: last_logged_step(run.metrics_path))
    latest = run.latest_evaluation()
    headline, metric = (None, None)
    if latest is not None:
        label = f"{latest.relative_to(run.path).as_posix()}/curves.csv"
        headline, metric = _reading(label, lambda: headline_of(latest / "curves.csv"))
    tokens = TASKS.get(config.task.name).kind == "tokens"  # no input dimension to show
    created = {}
    if isinstance(info.get("created"), str):  # when training first started (file times move)
        created["created"] = datetime.fromisoformat(info["created"]).astimezone()
    return {
        **created,
        "status": status,
        "task": config.task.name,
        "n_dims": None if tokens else config.task.n_dims,
        "n_points": config.task.n_points,
        "model": config.model.describe(),
        "n_params": info.get("n_params"),
        "steps": steps,
        "total_steps": config.train.steps,
        "stopped": _stopped(info.get("stopped")),
        "headline": headline,
        "headline_metric": metric,
        "config_hash": info.get("config_hash") or config.digest(),
    }


def _stopped(stopped: Any) -> str | None:
    """run.json's record of a target reached, in words; None without one (or a garbled one:
    the index shows what it can)."""
    try:
        return target_reached(stopped)
    except (KeyError, TypeError, ValueError, StopIteration):
        return None


def _process_gone(info: dict[str, Any]) -> bool:
    """Whether run.json names a training process on this machine that no longer exists."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False  # another machine's process, or a run from before pids were recorded
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def last_logged_step(path: Path) -> int:
    """The step of the last complete line of metrics.jsonl, 0 without one. Reads only the tail
    (the file grows with training), and skips a last line a running training is still writing."""
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - METRICS_TAIL_BYTES))
        lines = handle.read().split(b"\n")[:-1]  # the last piece is empty or half-written
    if size > METRICS_TAIL_BYTES:
        lines = lines[1:]  # the first piece may start mid-line
    for line in reversed(lines):
        if line.strip():
            return int(json.loads(line)["step"])
    return 0


def headline_of(curves_path: Path) -> tuple[float | None, str | None]:
    """The model's mean at the largest k on the training distribution, and its metric: the run
    catalog's and the sweep's headline. (None, None) before the run is evaluated, and when the
    evaluation has no rows of the model: a yardstick's value is never a run's headline."""
    if not curves_path.exists():
        return None, None
    points = [p for p in read_curves_csv(curves_path) if p.shift == "none" and p.learner == MODEL]
    if not points:
        return None, None
    last = max(points, key=lambda p: p.k)
    return last.mean, last.metric


# --- the SQLite file --------------------------------------------------------------------------


class _UnusableIndexError(Exception):
    """The index file is corrupt, or not an iclab index of this schema version."""


def _to_row(entry: RunEntry) -> tuple[Any, ...]:
    row = dict(zip(COLUMNS, astuple(entry), strict=True))
    row["path"] = str(entry.path)
    row["created"], row["updated"] = entry.created.timestamp(), entry.updated.timestamp()
    return tuple(row.values())


def _from_row(row: tuple[Any, ...]) -> RunEntry:
    values = dict(zip(COLUMNS, row, strict=True))
    values["path"] = Path(values["path"])
    for column in ("created", "updated"):
        values[column] = datetime.fromtimestamp(values[column]).astimezone()
    return RunEntry(**values)


def _sync_index(connection: sqlite3.Connection, root: Path) -> None:
    rows = connection.execute("SELECT name, path, fingerprint, status FROM runs").fetchall()
    indexed = {name: (path, stamp) for name, path, stamp, _ in rows}
    running = {name for name, _, _, status in rows if status == "running"}
    found = _find_run_dirs(root.resolve())
    changed = [  # running runs too: their process may have died with no file changing
        _describe_run(name, path)
        for name, path in found.items()
        if name in running or indexed.get(name) != (str(path), _fingerprint(path))
    ]
    removed = sorted(indexed.keys() - found.keys())
    if changed or removed:
        with _transaction(connection):
            connection.executemany("DELETE FROM runs WHERE name = ?", [(n,) for n in removed])
            connection.executemany(UPSERT, [(*_to_row(e), stamp) for e, stamp in changed])
    for name in removed:
        warnings.warn(f"{root / name} was removed; dropped from the index", stacklevel=3)


def _using_index(root: Path, action: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``action`` on a connection to ``ROOT/index.sqlite``. A corrupt, foreign or older
    index is deleted and recreated with a warning; an index that cannot be opened or written
    (read-only directory, locked past the timeout) is replaced by an in-memory one, so listing
    still works (run directories are the source of truth)."""
    index = root / INDEX_NAME
    try:
        return _with_connection(str(index), action)
    except sqlite3.OperationalError as error:
        warnings.warn(
            f"cannot use the run index {index} ({error}); indexing in memory this time",
            stacklevel=3,
        )
        return _with_connection(":memory:", action)
    except _UnusableIndexError as error:
        warnings.warn(f"{index} {error}; rebuilding it", stacklevel=3)
        _delete_index(index)
        return _with_connection(str(index), action)


def _with_connection(database: str, action: Callable[[sqlite3.Connection], T]) -> T:
    # timeout: wait up to 30 s for another writer (two trainings finishing at once)
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        _prepare(connection)
        return action(connection)
    except sqlite3.DatabaseError as error:
        if type(error) is sqlite3.DatabaseError:  # not a database, or a corrupt one
            raise _UnusableIndexError(f"is not a usable SQLite file ({error})") from error
        raise  # OperationalError (cannot open, locked), or a bug such as an IntegrityError
    finally:
        connection.close()


def _prepare(connection: sqlite3.Connection) -> None:
    """Create the table in an empty file; refuse a file with another schema."""
    if _user_version(connection) == 0:
        with _transaction(connection):  # re-checked under the lock: another process may win
            tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
            if _user_version(connection) == 0 and not tables:
                connection.execute(SCHEMA)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    version = _user_version(connection)
    if version != SCHEMA_VERSION:
        raise _UnusableIndexError(
            f"has schema version {version}, not {SCHEMA_VERSION} ("
            + (
                "written by an older iclab"
                if 0 < version < SCHEMA_VERSION
                else "written by a newer iclab, or not an iclab index"
            )
            + ")"
        )
    columns = tuple(row[1] for row in connection.execute("PRAGMA table_info(runs)"))
    if columns != TABLE_COLUMNS:
        raise _UnusableIndexError("is not an iclab run index (its runs table differs)")
    with contextlib.suppress(sqlite3.OperationalError):  # WAL is not possible on every filesystem
        connection.execute("PRAGMA journal_mode = WAL")


def _user_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the lock at once, so concurrent writers queue."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _delete_index(index: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
