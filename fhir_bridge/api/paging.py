"""Keyset paging of the internal API: ``_count`` and an opaque ``_cursor`` (a row id)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import urlencode

from fhir_bridge.fhir.outcome import FhirError, error

DEFAULT_PAGE, MAX_PAGE = 50, 500
#: the largest row id (64-bit on both databases): a larger "cursor" was made up
MAX_ROW = 2**63 - 1


def whole_number(raw: str, max_digits: int = 18) -> int | None:
    """``raw`` as a whole number when it is 1..max_digits ASCII digits, else None (``int()``
    takes Unicode digits such as '²' and refuses more than 4,300 digits: both were 500s)."""
    if raw.isascii() and raw.isdigit() and len(raw) <= max_digits:
        return int(raw)
    return None


def page_size(raw: str | None) -> int:
    """``_count``: 1..MAX_PAGE, default DEFAULT_PAGE; 400 otherwise."""
    if raw is None:
        return DEFAULT_PAGE
    count = whole_number(raw)
    if count is None or not 1 <= count <= MAX_PAGE:
        raise FhirError(400, error("invalid", f"_count must be 1-{MAX_PAGE}", "_count"))
    return count


def decode_cursor(raw: str | None) -> int | None:
    """The row id a ``_cursor`` stands for; 400 when it is not one of ours."""
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        row = whole_number(text, 19)
        if row is None or row > MAX_ROW:
            raise ValueError("not a row id")
        return row
    except (ValueError, UnicodeDecodeError):
        raise FhirError(
            400, error("invalid", "The paging cursor is not valid", "_cursor")
        ) from None


def next_link(path: str, args: Mapping[str, str], last_pk: int) -> str:
    """The link to the page after the row ``last_pk``, keeping the other parameters."""
    token = base64.urlsafe_b64encode(str(last_pk).encode()).decode().rstrip("=")
    kept = {k: v for k, v in args.items() if k != "_cursor"}
    return f"{path}?{urlencode({**kept, '_cursor': token})}"


def refuse_unknown(args: Mapping[str, str], known: set[str]) -> None:
    """400 naming the first query parameter the endpoint does not know."""
    unknown = sorted(set(args) - known)
    if unknown:
        raise FhirError(
            400, error("not-supported", f"Unknown parameter(s): {', '.join(unknown)}", unknown[0])
        )
