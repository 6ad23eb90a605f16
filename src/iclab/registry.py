"""Name → class registries for tasks, mixers, algorithms, shifts, probes and reproductions.

Each module registers what it defines with a decorator, so the CLI listings and the config
validation always show exactly what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from iclab.errors import UserError, did_you_mean

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class Registry(Generic[T]):
    """A dict of named classes with a registering decorator, which also sets each class's
    ``name`` attribute to the name it is registered under."""

    def __init__(self, kind: str, keywords: Sequence[str] = ()) -> None:
        """``keywords``: words its users accept beside the names (``all``), offered as
        suggestions for a misspelt name too."""
        self.kind, self.keywords = kind, tuple(keywords)
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            entry.name = name
            self._entries[name] = entry
            return entry

        return decorate

    def get(self, name: str) -> T:
        if name not in self._entries:
            hint = did_you_mean(str(name), [*self.names(), *self.keywords])
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(self.names())})"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))
