"""Errors a user can fix, apart from bugs.

Every error caused by what a user gave (a config, an option, a name, a run directory) derives
from ``UserError``: the command line prints its message on one line and exits with status 2.
Anything else is a bug in iclab and shows its traceback (``iclab --debug`` shows tracebacks for
user errors too).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable

# Set to 1 to lift the size limits (``within_size_limit``), on a machine that can hold the size.
NO_SIZE_LIMITS = "ICLAB_NO_SIZE_LIMITS"


class UserError(Exception):
    """Bad input, named in the message with what is allowed instead."""


class ConfigError(UserError, ValueError):
    """A config, override or option that cannot be used; the message says where and why.

    A ``ValueError`` too, so that pydantic validators can raise it and name the field."""


def close_names(
    given: str, candidates: Iterable[str], most: int = 2, cutoff: float = 0.6
) -> list[str]:
    """The candidates closest to a misspelt ``given`` (at most ``most``, difflib's ratio at least
    ``cutoff``), best first.

    A candidate matches as a whole (``quickstrt`` → quickstart) or by its beginning, so that a
    short or truncated name still finds its long one (``skewd`` → skewed_covariance), which
    difflib's ratio over the whole names misses."""
    names = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(given, names, n=most, cutoff=cutoff)
    if close or not given:
        return close
    beginnings = list(dict.fromkeys(name[: len(given) + 1] for name in names))
    found = difflib.get_close_matches(given, beginnings, n=most, cutoff=0.75)
    return [name for beginning in found for name in names if name.startswith(beginning)][:most]


def did_you_mean(
    given: str,
    candidates: Iterable[str],
    most: int = 2,
    cutoff: float = 0.6,
    written: Callable[[str], str] = str,
) -> str:
    """``"; did you mean a or b?"`` (``close_names``, each as ``written`` gives it: a dotted key,
    a path), or ``""`` when nothing is close."""
    close = [written(name) for name in close_names(given, candidates, most, cutoff)]
    return f"; did you mean {' or '.join(close)}?" if close else ""


def within_size_limit(value: int, limit: int) -> int:
    """``value``, or a ``ConfigError`` stating ``limit`` and how to lift it. Sizes past the limits
    iclab states (``model.n_layers: 1.0e+9``) are taken for typos and refused before anything is
    built, rather than exhausting memory while it is."""
    if value > limit and os.environ.get(NO_SIZE_LIMITS) != "1":
        raise ConfigError(
            f"must be at most {limit:,}, a limit that stops a typo from exhausting memory "
            f"({NO_SIZE_LIMITS}=1 lifts it)"
        )
    return value


def limit_note(limit: int) -> str:
    """A field description's words for its size limit."""
    return f"at most {limit:,} unless {NO_SIZE_LIMITS}=1"


class RunExistsError(UserError, FileExistsError):
    """A run directory that already holds a run, where a new one was asked for."""


class RunNotFoundError(UserError, FileNotFoundError):
    """A path that is not a run directory, or a run without what a command needs."""


class RunBusyError(UserError):
    """A run that another process is training: one writer per run directory."""


class RunDamagedError(UserError):
    """A file of a run directory that cannot be read; the message names it and where."""


class DivergedError(UserError, ArithmeticError):
    """Training met non-finite losses or gradients for longer than ``train.divergence_patience``
    allows; the run stops with status ``diverged`` and keeps its last finite checkpoint."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step

    def __reduce__(self) -> tuple:
        """Pickled with its step, so it crosses from a training process to its parent."""
        return type(self), (str(self), self.step)


class DiskFullError(UserError, OSError):
    """The disk filled up while a run was written; the message says how to resume it."""
