"""Pure helpers for FHIR transaction and batch Bundles (R4 http.html#transaction).

Entry processing order (DELETE, POST, PUT/PATCH, GET/HEAD), literal and conditional request
URLs (``Type/id``, ``Type?identifier=sys|val``), the FHIRPath of an entry for error reports,
and reference rewriting: every ``reference`` in a resource (deeply, extensions included) whose
value is a placeholder (``urn:uuid:`` fullUrl of a created entry, or a resolved conditional
reference ``Patient?identifier=..``) becomes the assigned ``Type/id``. Contained resources are
not entered (their references stay as sent) and local ``#id`` references are never touched.
No I/O here: the caller resolves identities and hands in the mapping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from fhir_bridge.fhir.search_query import SearchQuery, TokenValue

#: types clients may POST/PUT directly (the referral resources)
DIRECT_WRITE_TYPES = ("ServiceRequest", "Task")
#: types writable inside a transaction or batch Bundle
BUNDLE_WRITE_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Coverage",
    "Condition",
    "ServiceRequest",
    "Task",
)

#: R4 http.html#trules: DELETE first, then POST, then PUT/PATCH, then GET/HEAD.
METHOD_RANK = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}

_TYPE_RE = re.compile(r"[A-Z][A-Za-z]+")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CONDITIONAL_REF_RE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)\?(?P<query>.*)", re.DOTALL)


class BadUrl(ValueError):
    """A request URL that is neither ``Type``, ``Type/id`` nor ``Type?query``."""


@dataclass(frozen=True)
class RequestUrl:
    """A Bundle ``entry.request.url``: the type, and an id or a conditional query (or neither)."""

    resource_type: str
    resource_id: str | None = None
    params: tuple[tuple[str, str], ...] | None = None

    @property
    def conditional(self) -> bool:
        """True for ``Type?query``."""
        return self.params is not None


def processing_order(methods: Sequence[str | None]) -> list[int]:
    """Entry indexes in FHIR processing order (stable within one method; unknown last)."""
    return sorted(range(len(methods)), key=lambda i: METHOD_RANK.get(methods[i] or "", 9))


def parse_query(query: str) -> tuple[tuple[str, str], ...]:
    """Name/value pairs of a URL query (percent-decoded, blanks kept, order kept)."""
    return tuple(parse_qsl(query.lstrip("?"), keep_blank_values=True))


def parse_request_url(url: str, base_url: str | None = None) -> RequestUrl:
    """``Type``, ``Type/id`` or ``Type?query``, relative or under ``base_url``; else BadUrl."""
    rest = url.strip()
    if base_url and rest.startswith(base_url.rstrip("/") + "/"):
        rest = rest[len(base_url.rstrip("/")) + 1 :]
    rest = rest.lstrip("/")
    path, sep, query = rest.partition("?")
    parts = path.split("/")
    if not parts or not _TYPE_RE.fullmatch(parts[0]):
        raise BadUrl(f"'{url}' does not start with a resource type")
    if sep:
        if len(parts) != 1:
            raise BadUrl(f"'{url}': a conditional URL is Type?parameters")
        return RequestUrl(parts[0], params=parse_query(query))
    if len(parts) == 1:
        return RequestUrl(parts[0])
    if len(parts) == 2 and _ID_RE.fullmatch(parts[1]):
        return RequestUrl(parts[0], resource_id=parts[1])
    raise BadUrl(f"'{url}' is not Type, Type/id or Type?parameters")


def parse_conditional_reference(reference: str) -> RequestUrl | None:
    """``Patient?identifier=sys|val`` -> its type and query; None for any other reference."""
    match = _CONDITIONAL_REF_RE.fullmatch(reference)
    if match is None:
        return None
    return RequestUrl(match.group("type"), params=parse_query(match.group("query")))


def identity_claim(query: SearchQuery) -> tuple[str, str] | None:
    """(system, value) when ``query`` is exactly one ``identifier=system|value``, else None.

    Such a query names a business identity the store can enforce with an identifier claim.
    """
    if len(query.criteria) != 1:
        return None
    crit = query.criteria[0]
    if crit.name != "identifier" or crit.modifier is not None or len(crit.values) != 1:
        return None
    value = crit.values[0]
    if not isinstance(value, TokenValue) or not value.system or not value.code:
        return None
    return value.system, value.code


def iter_references(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(element path, value) of every ``reference`` string under ``node``, contained excluded.

    Paths are FHIRPath fragments relative to ``node`` (``subject.reference``,
    ``extension[0].valueReference.reference``).
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "contained":
                continue
            child = f"{path}.{key}" if path else key
            if key == "reference" and isinstance(value, str):
                yield child, value
            else:
                yield from iter_references(value, child)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from iter_references(item, f"{path}[{i}]")


def rewrite_references(node: Any, mapping: Mapping[str, str]) -> Any:
    """A copy of ``node`` with every ``reference`` found in ``mapping`` replaced.

    ``contained`` resources are copied unchanged; the input is never modified.
    """
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "contained":
                out[key] = value
            elif key == "reference" and isinstance(value, str) and not value.startswith("#"):
                out[key] = mapping.get(value, value)
            else:
                out[key] = rewrite_references(value, mapping)
        return out
    if isinstance(node, list):
        return [rewrite_references(item, mapping) for item in node]
    return node


def entry_path(index: int, resource_type: str | None = None) -> str:
    """``Bundle.entry[i]``, or ``Bundle.entry[i].resource.ofType(T)`` when a type is given."""
    base = f"Bundle.entry[{index}]"
    return f"{base}.resource.ofType({resource_type})" if resource_type else base


_ENTRY_RE = re.compile(r"Bundle\.entry\[(\d+)\]")


def entry_index(expression: str) -> int | None:
    """The entry index an expression starting with ``Bundle.entry[i]`` names, else None."""
    match = _ENTRY_RE.match(expression)
    return int(match.group(1)) if match else None


def status_line(status: int) -> str:
    """``201 Created`` (Bundle.entry.response.status)."""
    return f"{status} {HTTPStatus(status).phrase}"
