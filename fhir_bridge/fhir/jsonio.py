"""FHIR JSON in and out without losing a digit: decimals stay exact, duplicate keys are refused.

Bad input is a JsonError (a ValueError), never another exception: numbers longer than
MAX_NUMBER_DIGITS (Python refuses ``int()`` on more than 4,300 digits, CVE-2020-10735) and
nesting deeper than MAX_DEPTH (validation walks recursively; orjson refuses to write more than
254 levels) and unpaired surrogate escapes (``"\\ud800"``: no UTF-8 writer can carry them) are
refused here, so every caller answers 400 instead of a 500.

``json.loads`` with ``parse_float=Decimal`` keeps ``1.50`` as ``Decimal("1.50")``; ``orjson``
writes it back verbatim through ``orjson.Fragment``. Round-tripping through the fhir.resources
models would turn it into ``1.5`` (libraries.md 1.3), so resources are handled as plain dicts.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

#: deepest nesting accepted; real FHIR resources (even Bundles of Questionnaires) stay far below
MAX_DEPTH = 100
#: longest number accepted (digits, sign, point and exponent included)
MAX_NUMBER_DIGITS = 4300
_INT64 = range(-(2**63), 2**63)
#: a \uD800-\uDFFF escape somewhere in the text: only then are strings checked for one unpaired
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonError(ValueError):
    """The body is not acceptable JSON; ``position`` is the character offset when known."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def _no_constants(name: str) -> Any:
    raise JsonError(f"{name} is not a valid JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise JsonError(f"duplicate JSON property {dup!r}")
    return obj


def _too_long(text: str) -> None:
    if len(text) > MAX_NUMBER_DIGITS:
        raise JsonError(f"invalid JSON: a number has more than {MAX_NUMBER_DIGITS} characters")


def _parse_int(text: str) -> int | Decimal:
    """An int when it fits 64 bits (orjson writes no more); larger ones stay exact as Decimal."""
    _too_long(text)
    value = int(text)
    return value if value in _INT64 else Decimal(text)


def _parse_float(text: str) -> Decimal:
    _too_long(text)
    return Decimal(text)


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _unpaired_surrogate(value: Any) -> bool:
    """Does any string (or key) in ``value`` hold a lone UTF-16 surrogate?"""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def loads(data: bytes | str) -> Any:
    """Parse JSON; decimals become ``Decimal``; NaN/Infinity, duplicate keys, numbers of more
    than MAX_NUMBER_DIGITS characters and nesting beyond MAX_DEPTH raise JsonError."""
    try:
        value = json.loads(
            data,
            parse_float=_parse_float,
            parse_int=_parse_int,
            parse_constant=_no_constants,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise JsonError(
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", exc.pos
        ) from None
    except UnicodeDecodeError:
        raise JsonError("invalid JSON: body is not UTF-8") from None
    except RecursionError:
        raise JsonError(f"invalid JSON: nested more than {MAX_DEPTH} levels deep") from None
    if depth(value) > MAX_DEPTH:
        raise JsonError(f"invalid JSON: nested more than {MAX_DEPTH} levels deep")
    pattern = _SURROGATE_ESCAPE if isinstance(data, str) else _SURROGATE_ESCAPE_BYTES
    if pattern.search(data) and _unpaired_surrogate(value):  # type: ignore[arg-type]
        # RFC 8259 8.2 / RFC 7493 2.1: no UTF-8 text, database or JSON writer can carry one
        raise JsonError("invalid JSON: a string holds an unpaired UTF-16 surrogate escape")
    return value


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    """Serialize to compact (or indented) UTF-8 JSON; Decimals keep their exact digits."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)
