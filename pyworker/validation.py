"""Turning a JSON object into a dataclass, with every bad field named."""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")

MISSING = "missing parameter"


class JsonDataException(Exception):
    """A request's JSON did not fit; `message` maps each bad field to why.

    The worker answers 422 with `message` as the body, e.g.
    `{"payload": {"prompt": "missing parameter"}}`.
    """

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message


def json_type_name(value: Any) -> str:
    """How a parsed JSON value's type is named in error messages."""
    return "null" if value is None else type(value).__name__


# What json.loads can produce for each annotation, and how errors name it.
_JSON_TYPES: dict[Any, tuple[frozenset[type], str]] = {
    str: (frozenset({str}), "str"),
    int: (frozenset({int}), "int"),  # not bool: True is an int to Python, not to JSON
    float: (frozenset({int, float}), "number"),
    bool: (frozenset({bool}), "bool"),
    type(None): (frozenset({type(None)}), "null"),
    list: (frozenset({list}), "list"),
    tuple: (frozenset({list}), "list"),
    dict: (frozenset({dict}), "object"),
}


def _json_types(annotation: Any) -> tuple[frozenset[type], str] | None:
    """The JSON value types `annotation` admits, or None to admit anything."""
    known = _JSON_TYPES.get(annotation)
    if known is not None:
        return known
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        allowed: set[type] = set()
        names: list[str] = []
        for arg in typing.get_args(annotation):
            part = _json_types(arg)
            if part is None:
                return None
            allowed |= part[0]
            names.append(part[1])
        return frozenset(allowed), " or ".join(names)
    if origin in (list, tuple, typing.Sequence, collections.abc.Sequence):
        return _JSON_TYPES[list]
    if origin in (dict, typing.Mapping, collections.abc.Mapping):
        return _JSON_TYPES[dict]
    return None


@cache
def _fields(cls: type) -> tuple[tuple[str, bool, frozenset[type] | None, str], ...]:
    """(name, required, the JSON types it admits or None for any, how errors name them) per field."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        spec = _json_types(hints.get(field.name, Any))
        allowed, names = (None, "") if spec is None else spec
        out.append((field.name, required, allowed, names))
    return tuple(out)


def _read_fields(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The values in `data` for the fields of dataclass `cls`, and each field it lacks or has of the wrong type."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, required, allowed, names in _fields(cls):
        if name not in data:
            if required:
                errors[name] = MISSING
            continue
        value = data[name]
        # An exact type test: json.loads makes only these types, and it keeps bool apart from int.
        if allowed is None or type(value) in allowed:
            values[name] = value
        else:
            errors[name] = f"expected {names}, got {json_type_name(value)}"
    return values, errors


def _not_an_object(data: Any) -> str:
    return f"expected a JSON object, got {json_type_name(data)}"


def field_errors(cls: type, data: Any) -> dict[str, str]:
    """Each field of dataclass `cls` that `data` lacks or has of the wrong type."""
    if not isinstance(data, dict):
        return {"": _not_an_object(data)}
    return _read_fields(cls, data)[1]


def from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
    """An instance of dataclass `cls` from the JSON object `data`; unknown keys are ignored.

    Raises `JsonDataException` naming every missing or mistyped field, under
    the key `where` when given.
    """
    if not isinstance(data, dict):
        detail = _not_an_object(data)
        raise JsonDataException({where: detail} if where else {"": detail})
    values, errors = _read_fields(cls, data)
    if errors:
        raise JsonDataException({where: errors} if where else errors)
    return cls(**values)
