"""Parsing JSON that a client sent, refusing what would fail later.

Python's `json.loads` accepts things no consumer downstream can handle: a
body nested so deep that parsing (or re-encoding) it raises RecursionError,
UTF-8-encoded surrogates, escaped lone surrogates that no tokenizer or
strict encoder takes, NaN and Infinity. Each is refused here with a
message for a 422 answer, so nothing of it reaches the model server.
"""

from __future__ import annotations

import json
from typing import Any

# Deeper JSON is refused: json.loads recurses, and so does every consumer.
MAX_JSON_DEPTH = 64


class JsonBodyError(ValueError):
    """A request body is not JSON the worker accepts; the message says why (answered 422)."""


def _refuse_constant(name: str) -> Any:
    raise JsonBodyError(f"{name} is not JSON")


# Made once: json.loads and json.dumps build a new decoder or encoder on
# every call that passes an option.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def dumps_compact(data: Any) -> str:
    """`json.dumps(data, separators=(",", ":"))`, without building an encoder each time."""
    return _COMPACT.encode(data)


def loads_checked(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` for bytes from a client, refusing what would fail later.

    Refused with `JsonBodyError`: invalid UTF-8 (json.loads itself lets
    encoded surrogates through), nesting deeper than `max_depth`, escaped
    lone surrogates ("\\ud800": valid JSON syntax, but no Unicode text, so
    tokenizers and strict encoders fail on it), and NaN or Infinity.
    The checks cost nothing for ordinary bodies: a tree is walked only
    when the body holds more brackets than `max_depth`, or a \\uD escape.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonBodyError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise JsonBodyError(f"JSON nested deeper than {max_depth} levels") from None
    except JsonBodyError:
        raise
    except ValueError as exc:
        raise JsonBodyError(f"invalid JSON: {exc}") from None
    del text
    # Single-byte finds (memchr) first: most bodies have no backslash at all,
    # and few brackets. Four full scans cost more than parsing a prompt.
    surrogates = b"\\" in body and (b"\\ud" in body or b"\\uD" in body)
    if surrogates or _more_brackets(body, max_depth):
        _walk(data, max_depth, surrogates)
    return data


def _more_brackets(body: bytes, limit: int) -> bool:
    """True when `body` holds more than `limit` opening brackets, `[` and `{` together."""
    seen = 0
    for bracket in (b"[", b"{"):
        at = body.find(bracket)
        while at >= 0:
            seen += 1
            if seen > limit:
                return True
            at = body.find(bracket, at + 1)
    return False


def _walk(data: Any, max_depth: int, surrogates: bool) -> None:
    """Check depth and strings of a parsed tree without recursion."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        kind = type(value)
        if kind is str:
            if surrogates:
                _check_text(value, where)
            continue
        if kind is dict:
            items: Any = value.items()
        elif kind is list:
            items = enumerate(value)
        else:
            continue
        if depth > max_depth:
            raise JsonBodyError(f"JSON nested deeper than {max_depth} levels")
        for key, item in items:
            if kind is list:
                path = f"{where}[{key}]"
            else:
                if surrogates:
                    _check_text(key, f"a key of {where}" if where else "a key")
                path = f"{where}.{key}" if where else key
            if type(item) in (dict, list, str):
                stack.append((item, depth + 1, path))


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JsonBodyError(
            f"lone surrogate \\u{ord(value[exc.start]):04x} in a JSON string at {where or 'the top'}"
        ) from None
