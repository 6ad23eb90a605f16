"""Files: atomic writes (a file is either its old content or its new content, never
half-written), and bounded reads of YAML (a file cannot make a reader hang or run out of memory).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import yaml

from iclab.errors import ConfigError

# What a YAML document iclab reads may hold, checked before anything is expanded or built:
# configs, sweeps and run files are a few kilobytes, a few levels deep.
YAML_MAX_BYTES = 1_000_000
YAML_MAX_DEPTH = 32  # nested mappings and lists, aliases followed
YAML_MAX_NODES = 100_000  # values, mapping keys and containers, every alias counted in full
PLAIN_TYPES = ("null", "bool", "int", "float", "str", "seq", "map")
PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in PLAIN_TYPES}
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename it into place, readable
    by others as an ordinary file is (``mode``; the temporary file starts private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


class _BoundedLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that measures every node while composing it, before any alias is
    expanded into objects: its size with aliases counted in full and its nesting depth. A
    "billion laughs" file fails at its first oversized anchor, 3000 nested brackets fail at
    level ``YAML_MAX_DEPTH`` instead of exhausting the recursion limit. Only plain data is built:
    a date reads as the text written (as in YAML 1.2), and tags such as ``!!binary`` or ``!!set``
    are errors."""

    yaml_constructors: ClassVar[dict] = {
        tag: constructor
        for tag, constructor in yaml.SafeLoader.yaml_constructors.items()
        if tag is None or tag in PLAIN_TAGS
    }
    yaml_implicit_resolvers: ClassVar[dict] = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.measures: dict[yaml.Node, tuple[int, int]] = {}  # node → (size, height) composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        self.depth += 0 if alias else 1
        if self.depth > YAML_MAX_DEPTH:
            raise _LimitError(f"nested more than {YAML_MAX_DEPTH} levels deep", mark)
        node = super().compose_node(parent, index)
        if not alias:
            self.depth -= 1
            self.measures[node] = self.measure(node)
        if node not in self.measures:  # an anchor still being composed
            raise _LimitError("an alias refers to the anchor it is inside of", mark)
        size, height = self.measures[node]
        if size > YAML_MAX_NODES:
            raise _LimitError(f"more than {YAML_MAX_NODES:,} values with aliases expanded", mark)
        if self.depth + height > YAML_MAX_DEPTH:
            raise _LimitError(f"nested more than {YAML_MAX_DEPTH} levels deep", mark)
        return node

    def measure(self, node: yaml.Node) -> tuple[int, int]:
        """(nodes in ``node`` with aliases expanded, levels of nodes in it), from its children's
        measures (each measured as it was composed)."""
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        measures = [self.measures[child] for child in children]
        size = 1 + sum(size for size, _ in measures)
        return size, 1 + max((height for _, height in measures), default=0)


class _LimitError(yaml.MarkedYAMLError):
    """A document past one of the stated limits; raised while composing, so nothing is built."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def parse_yaml(text: str, source: str) -> Any:
    """The plain data (mappings with text keys, lists, text, numbers, booleans, null) of a
    YAML document, within the limits above; anything else is a one-line ``ConfigError``
    starting with ``source`` (a file, or ``override 'train.lr=...'``)."""
    if len(text) > YAML_MAX_BYTES:
        raise ConfigError(f"{source}: longer than {YAML_MAX_BYTES:,} characters")
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader, bounded
    except yaml.MarkedYAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {describe_yaml_error(error)}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    return plain_copy(data, source)


def describe_yaml_error(error: yaml.MarkedYAMLError) -> str:
    """``mapping values are not allowed here (line 3, column 7)``: one line."""
    problem = " ".join(str(error.problem or error.context or "invalid").split())
    mark = error.problem_mark or error.context_mark
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def read_yaml(path: Path) -> Any:
    """The plain data of the YAML file at ``path`` (see ``parse_yaml``): one that is too large,
    a directory, unreadable or not UTF-8 is a ``ConfigError`` naming it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(YAML_MAX_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a YAML file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(raw) > YAML_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {YAML_MAX_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    return parse_yaml(text, str(path))


def plain_copy(data: Any, source: str, where: tuple[str, ...] = ()) -> Any:
    """A copy of ``data`` made of mappings with text keys, lists (tuples become lists), text,
    numbers, booleans and null, at most ``YAML_MAX_DEPTH`` levels deep; anything else is a
    ``ConfigError`` naming ``source`` and where in ``data`` it is."""
    location = f"{source}: {'.'.join(where) or '(top level)'}"
    if len(where) >= YAML_MAX_DEPTH:
        raise ConfigError(f"{location}: nested more than {YAML_MAX_DEPTH} levels deep")
    if isinstance(data, dict):
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(f"{location}: key {key!r} is not text (quote it)")
        return {key: plain_copy(value, source, (*where, key)) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain_copy(item, source, (*where, str(i))) for i, item in enumerate(data)]
    if isinstance(data, str) and not is_unicode(data):
        raise ConfigError(f"{location}: {data!r} holds a lone surrogate, not Unicode text")
    if data is None or isinstance(data, (str, int, float, bool)):
        return data
    raise ConfigError(
        f"{location}: a {type(data).__name__} is not a config value (allowed: mappings, lists, "
        "text, numbers, true/false, null)"
    )


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (YAML's ``"\\ud800"`` cannot)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
