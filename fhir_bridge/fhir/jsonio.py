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
from itertools import accumulate
from typing import Any

import orjson

#: deepest nesting accepted; real FHIR resources (even Bundles of Questionnaires) stay far below
MAX_DEPTH = 100
#: longest number accepted (digits, sign, point and exponent included)
MAX_NUMBER_DIGITS = 4300
_INT64 = range(-(2**63), 2**63)
#: a \uD800-\uDFFF escape somewhere in the text: only then are strings checked for one unpaired
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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


#: only quotes and brackets are kept to measure nesting; 19 digits in a row are looked for
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_RUN_OF_19_DIGITS = b"0" * 19
_QUOTED = re.compile(rb'"[^"]*"')
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (brackets inside strings do
    not count), measured before parsing so nothing recursive ever sees a deeper document.

    Escaped backslashes and quotes go first, so every quote left opens or closes a string;
    then only quotes and brackets are kept, the strings dropped, and the running bracket
    count's maximum taken, all at C speed.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # two adjacent quotes enclose nothing: dropping them changes no other quote's role
    structure = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:  # strings holding brackets: rare, and short by now
        structure = _QUOTED.sub(b"", structure)
    return max(accumulate(map(_STEP.__getitem__, structure)), default=0)


def _has_long_digit_run(raw: bytes) -> bool:
    """19 digits in a row somewhere (in a number or a string): maybe an integer beyond 64 bits
    or a number past MAX_NUMBER_DIGITS, so numbers take the checked (slower) path."""
    return _RUN_OF_19_DIGITS in raw.translate(_DIGITS_AS_ZERO)


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
    than MAX_NUMBER_DIGITS characters, nesting beyond MAX_DEPTH and unpaired surrogate escapes
    raise JsonError. Integers beyond 64 bits become exact ``Decimal``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if isinstance(data, bytes) and json.detect_encoding(data) not in ("utf-8", "utf-8-sig"):
        raise JsonError("invalid JSON: body is not UTF-8")  # RFC 8259 8.1; json takes UTF-16
    if depth(raw) > MAX_DEPTH:
        raise JsonError(f"invalid JSON: nested more than {MAX_DEPTH} levels deep")
    long_numbers = _has_long_digit_run(raw)  # else json's own int() and Decimal are exact
    try:
        value = json.loads(
            data,
            parse_float=_parse_float if long_numbers else Decimal,
            parse_int=_parse_int if long_numbers else None,
            parse_constant=_no_constants,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise JsonError(
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", exc.pos
        ) from None
    except JsonError:
        raise
    except UnicodeDecodeError:
        raise JsonError("invalid JSON: body is not UTF-8") from None
    except ValueError:  # int() past its digit limit: not reached past the digit-run check
        raise JsonError(
            f"invalid JSON: a number has more than {MAX_NUMBER_DIGITS} characters"
        ) from None
    except RecursionError:  # not reached past the depth check; kept as a last guard
        raise JsonError(f"invalid JSON: nested more than {MAX_DEPTH} levels deep") from None
    if _SURROGATE_ESCAPE.search(raw) and _unpaired_surrogate(value):
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
