"""Turning a JSON object into a dataclass, with every bad field named."""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any, Callable, TypeVar

T = TypeVar("T")

MISSING = "missing parameter"

# A check returns None when the value fits, else what was expected.
_Check = Callable[[Any], "str | None"]


class JsonDataException(Exception):
    """A request's JSON did not fit; `message` maps each bad field to why.

    The worker answers 422 with `message` as the body, e.g.
    `{"payload": {"prompt": "missing parameter"}}`.
    """

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_for(annotation: Any) -> _Check:
    """A check for the simple annotations payloads use; anything else is accepted."""
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is object:
        return lambda value: None
    if origin in (typing.Union, types.UnionType):
        checks = [_check_for(arg) for arg in typing.get_args(annotation)]
        names = " or ".join(_describe(arg) for arg in typing.get_args(annotation))

        def check_union(value: Any) -> str | None:
            return None if any(c(value) is None for c in checks) else f"expected {names}, got {_type_name(value)}"

        return check_union
    if annotation is type(None):
        return lambda value: None if value is None else f"expected null, got {_type_name(value)}"
    if annotation is bool:
        return lambda value: None if isinstance(value, bool) else f"expected bool, got {_type_name(value)}"
    if annotation is int:
        # JSON has no int/bool split in Python's eyes: True is an int; refuse it.
        return lambda value: (
            None if isinstance(value, int) and not isinstance(value, bool) else f"expected int, got {_type_name(value)}"
        )
    if annotation is float:
        return lambda value: (
            None
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else f"expected number, got {_type_name(value)}"
        )
    if annotation is str:
        return lambda value: None if isinstance(value, str) else f"expected str, got {_type_name(value)}"
    base = origin or annotation
    if base in (list, tuple, typing.Sequence):
        return lambda value: None if isinstance(value, list) else f"expected list, got {_type_name(value)}"
    if base in (dict, typing.Mapping):
        return lambda value: None if isinstance(value, dict) else f"expected object, got {_type_name(value)}"
    return lambda value: None


def _describe(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if annotation is float:
        return "number"
    if annotation is dict:
        return "object"
    return getattr(annotation, "__name__", str(annotation))


@lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[tuple[str, bool, _Check], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        out.append((field.name, required, _check_for(hints.get(field.name, Any))))
    return tuple(out)


def field_errors(cls: type, data: Any) -> dict[str, str]:
    """Each field of dataclass `cls` that `data` lacks or has of the wrong type."""
    if not isinstance(data, dict):
        return {"": f"expected a JSON object, got {_type_name(data)}"}
    errors: dict[str, str] = {}
    for name, required, check in _fields(cls):
        if name not in data:
            if required:
                errors[name] = MISSING
            continue
        problem = check(data[name])
        if problem is not None:
            errors[name] = problem
    return errors


def from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
    """An instance of dataclass `cls` from the JSON object `data`; unknown keys are ignored.

    Raises `JsonDataException` naming every missing or mistyped field, under
    the key `where` when given.
    """
    errors = field_errors(cls, data)
    if errors:
        if "" in errors:
            detail: Any = errors[""]
        else:
            detail = errors
        raise JsonDataException({where: detail} if where else errors)
    names = [name for name, _, _ in _fields(cls)]
    return cls(**{name: data[name] for name in names if name in data})
