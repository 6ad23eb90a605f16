"""Specs: a registered class with validated options, written ``knn(k=5)`` or
``linear_attention(form=chunked)``.

Algorithms, mixers, shifts and probes are named this way in configs and on the command line.
Text is parsed once, into a ``Spec`` value (the class and its pydantic ``Options``), which every
consumer uses as it is; ``str(spec)`` gives the canonical text back (the options given, in the
order the class declares them), which is also the learner's name in tables and plots. Option
values are parsed as YAML.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema

from iclab.errors import ConfigError
from iclab.io import parse_yaml
from iclab.registry import Registry, UnknownNameError

_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^()]*)\))?\s*$")


class SpecError(ConfigError):
    """A spec that does not parse, names nothing registered, or has a bad option."""


class UnknownSpecError(SpecError, UnknownNameError):
    """A spec naming nothing registered: a ``ValueError`` (so pydantic names the field) and an
    ``UnknownNameError`` like any unknown name."""


class Spec(NamedTuple):
    """A registered class (``cls``, with its ``name``) and an instance of its ``Options``;
    unpacks as ``cls, options = spec``."""

    cls: type
    options: BaseModel

    @property
    def name(self) -> str:
        return self.cls.name

    def __str__(self) -> str:
        given = [field for field in type(self.options).model_fields if field in self.given]
        if not given:
            return self.name
        values = ", ".join(
            f"{field}={format_value(getattr(self.options, field))}" for field in given
        )
        return f"{self.name}({values})"

    @property
    def given(self) -> set[str]:
        """The options written in the spec (the others take their defaults)."""
        return set(self.options.model_fields_set)


def format_value(value: Any) -> str:
    """An option value as YAML reads it back: ``0.1``, ``2``, ``1.0e-05``, ``null``, ``true``,
    ``[1, 2]``, ``relu``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        text = f"{value:g}" if float(f"{value:g}") == value else repr(value)
        mantissa, exponent, power = text.partition("e")
        return f"{mantissa}.0e{power}" if exponent and "." not in mantissa else text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return str(value)


def parse_spec(text: str, what: str = "algorithm") -> tuple[str, dict[str, Any]]:
    """``"knn(k=5)"`` → ``("knn", {"k": 5})``; a ``SpecError`` naming ``what`` otherwise."""
    match = _SPEC.match(text)
    if match is None:
        raise SpecError(f"{what} {text!r} must look like name or name(option=value, ...)")
    name, arguments = match.group(1), match.group(2)
    options: dict[str, Any] = {}
    for item in split_specs(arguments or ""):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SpecError(f"{what} {text!r}: option {item!r} must look like option=value")
        try:
            options[key.strip()] = parse_yaml(raw, f"{what} {text!r}: value of {key.strip()}")
        except ConfigError as error:
            raise SpecError(str(error)) from None
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


def resolve_spec(text: str | Spec, registry: Registry, what: str) -> Spec:
    """``"name(option=value)"`` → ``Spec`` of the class registered as ``name`` with validated
    ``Options``; errors name the spec, the option and what is allowed."""
    if isinstance(text, Spec):
        if text.name not in registry or registry.get(text.name) is not text.cls:
            raise SpecError(f"{what} {text}: not a registered {registry.kind}")
        return text
    if not isinstance(text, str):
        raise SpecError(f"{what} must be a spec such as name(option=value), got {text!r}")
    name, raw_options = parse_spec(text, what)
    try:
        cls = registry.get(name)
    except UnknownNameError as error:  # a ValueError too, so pydantic names the field
        raise UnknownSpecError(str(error)) from None
    try:
        return Spec(cls, cls.Options.model_validate(raw_options))
    except ValidationError as error:
        raise SpecError(f"{what} {text!r}: {describe_option_errors(error, cls)}") from None


def describe_option_errors(error: ValidationError, cls: type) -> str:
    """``k: Input should be greater than or equal to 1 (got 0)``; for an unknown option, the
    options there are."""
    fields = cls.Options.model_fields
    allowed = ", ".join(f"{name}={info.default!r}" for name, info in fields.items())
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "options"
        if item["type"] == "extra_forbidden":
            known = f"options are {allowed}" if fields else "it takes no options"
            problems.append(f"{where}: unknown option ({known})")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message} (got {item['input']!r})")
    return "; ".join(problems)


def spec_type(registry: Registry, what: str) -> Any:
    """A pydantic field type for a spec of ``registry``: validated from text (or a ``Spec``),
    serialised as its canonical text."""

    def validate(value: Any) -> Spec:
        return resolve_spec(value, registry, what)

    return Annotated[
        Spec,
        PlainValidator(validate),
        PlainSerializer(str, return_type=str),
        WithJsonSchema({"type": "string"}),
    ]
