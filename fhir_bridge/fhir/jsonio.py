"""FHIR JSON in and out without losing a digit: decimals stay exact, duplicate keys are refused.

``json.loads`` with ``parse_float=Decimal`` keeps ``1.50`` as ``Decimal("1.50")``; ``orjson``
writes it back verbatim through ``orjson.Fragment``. Round-tripping through the fhir.resources
models would turn it into ``1.5`` (libraries.md 1.3), so resources are handled as plain dicts.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


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


def loads(data: bytes | str) -> Any:
    """Parse JSON; decimals become ``Decimal``; NaN/Infinity and duplicate keys raise JsonError."""
    try:
        return json.loads(
            data,
            parse_float=Decimal,
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
        raise JsonError("invalid JSON: nested too deeply") from None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    """Serialize to compact (or indented) UTF-8 JSON; Decimals keep their exact digits."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)
