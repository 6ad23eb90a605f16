"""Specs: a registered name with options, as in ``knn(k=5)`` or ``linear_attention(form=chunked)``.

Algorithms and sequence mixers are both named this way in configs and on the command line;
option values are parsed as YAML.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from iclab.registry import Registry

_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^()]*)\))?\s*$")


def parse_spec(spec: str, what: str = "algorithm") -> tuple[str, dict[str, Any]]:
    """``"knn(k=5)"`` → ``("knn", {"k": 5})``; a clear error, naming ``what``, for anything else."""
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"{what} {spec!r} must look like name or name(option=value, ...)")
    name, arguments = match.group(1), match.group(2)
    options: dict[str, Any] = {}
    for item in split_specs(arguments or ""):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{what} {spec!r}: option {item!r} must look like option=value")
        try:
            options[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"{what} {spec!r}: value of {key.strip()} is not valid") from None
    return name, options


def split_specs(text: str, separator: str = ",") -> list[str]:
    """Split ``"ridge(alpha=1), knn(k=3)"`` at the separators outside parentheses and brackets
    (``linear_probe(positions=[1, 2])`` is one spec)."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1, "[": 1, "]": -1}.get(char, 0)
        if char == separator and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        items.append(current.strip())
    return items


def resolve_spec(spec: str, registry: Registry, what: str) -> tuple[Any, Any]:
    """``"name(option=value)"`` → (the class registered as ``name``, its validated ``Options``);
    errors name the spec, the option and what is allowed."""
    name, raw_options = parse_spec(spec, what=what)
    cls = registry.get(name)
    try:
        return cls, cls.Options.model_validate(raw_options)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'options'}: {item['msg']}"
            for item in error.errors()
        )
        raise ValueError(f"{what} {spec!r}: {problems}") from None
