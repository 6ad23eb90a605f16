"""Errors a user can fix, apart from bugs.

Every error caused by what a user gave (a config, an option, a name, a run directory) derives
from ``UserError``: the command line prints its message on one line and exits with status 2.
Anything else is a bug in iclab and shows its traceback (``iclab --debug`` shows tracebacks for
user errors too).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, named in the message with what is allowed instead."""


class ConfigError(UserError, ValueError):
    """A config, override or option that cannot be used; the message says where and why.

    A ``ValueError`` too, so that pydantic validators can raise it and name the field."""


class RunExistsError(UserError, FileExistsError):
    """A run directory that already holds a run, where a new one was asked for."""


class RunNotFoundError(UserError, FileNotFoundError):
    """A path that is not a run directory, or a run without what a command needs."""
