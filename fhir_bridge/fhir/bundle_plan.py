"""Planning a transaction or batch Bundle: each entry checked and turned into a ``BundleOp``.

Pure: the entry's JSON in, what to do (method, target, resource, conditions) out, or a
FhirError naming the entry's element. No store: resolving targets is the service's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_bridge.fhir.outcome import FhirError, Issue, error
from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.search_query import SearchQuery, TokenValue, parse_search
from fhir_bridge.fhir.transaction import (
    BUNDLE_WRITE_TYPES,
    BadUrl,
    RequestUrl,
    entry_path,
    parse_query,
    parse_request_url,
)

BUNDLE_TYPES = BUNDLE_WRITE_TYPES


@dataclass(frozen=True)
class BundleOp:
    """One Bundle entry, checked: what to do, on which type, under which conditions."""

    index: int
    method: str
    url: RequestUrl
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: SearchQuery | None = None
    if_match: int | None = None
    query: SearchQuery | None = None  # conditional PUT, or a GET entry's search

    @property
    def searches(self) -> bool:
        """A GET entry that is a search (``Type?params``), not a read (``Type/id``)."""
        return self.method == "GET" and self.url.resource_id is None

    @property
    def rtype(self) -> str:
        """The resource type the entry is about."""
        return self.url.resource_type

    @property
    def path(self) -> str:
        """The entry's FHIRPath (``Bundle.entry[3]``)."""
        return entry_path(self.index)


def bad(status: int, code: str, diagnostics: str, expression: str) -> FhirError:
    return FhirError(status, error(code, diagnostics, expression))


def _at(issue: Issue, expression: str) -> Issue:
    return Issue(issue.severity, issue.code, issue.diagnostics, (expression,))


def relocated(exc: FhirError, expression: str, status: int | None = None) -> FhirError:
    return FhirError(status or exc.status, [_at(i, expression) for i in exc.issues])


def conditional_query(
    resource_type: str, params: Sequence[tuple[str, str]], expression: str
) -> SearchQuery:
    """Parse a conditional query strictly; any problem is a 400 naming ``expression``."""
    try:
        query = parse_search(resource_type, params)
    except FhirError as exc:
        raise relocated(exc, expression, 400) from None
    if not query.criteria:
        raise FhirError(
            400, error("invalid", "A conditional request needs a search criterion", expression)
        )
    return query


def search_query(url: RequestUrl, expression: str) -> SearchQuery:
    """A GET entry's search (``Type`` or ``Type?params``), parsed as ``GET [base]/Type?params``
    is (strictly); an unknown type is a 404 and a bad parameter a 400, both naming
    ``expression`` (the entry's ``request.url``)."""
    if url.resource_type not in SEARCH_PARAMS:
        raise bad(
            404,
            "not-supported",
            f"Resource type {url.resource_type} is not supported by this server",
            expression,
        )
    try:
        return parse_search(url.resource_type, list(url.params or ()))
    except FhirError as exc:
        raise relocated(exc, expression, 400) from None


def parse_if_match(header: str, expression: str = "If-Match") -> int:
    """``W/"3"`` (or ``"3"``, ``3``) -> 3; anything else is a 400."""
    tag = header.strip().removeprefix("W/").strip('"')
    if not (tag.isascii() and tag.isdigit() and len(tag) <= 18):  # int() takes '²', 5000 digits
        raise FhirError(
            400, error("invalid", 'If-Match must be a version ETag such as W/"3"', expression)
        )
    return int(tag)


def plan_entry(index: int, entry: Any, base: str) -> BundleOp:
    """Check one entry's request and resource; FhirError naming the entry when it is unusable."""
    path = entry_path(index)
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict):
        raise bad(400, "required", "A transaction/batch entry needs a request", f"{path}.request")
    method, url = request.get("method"), request.get("url")
    if method not in ("POST", "PUT", "GET"):
        raise bad(
            405, "not-supported", f"{method} is not supported in a Bundle", f"{path}.request.method"
        )
    if not isinstance(url, str) or not url.strip():
        raise bad(400, "required", "The entry's request.url is missing", f"{path}.request.url")
    try:
        parsed = parse_request_url(url, base)
    except BadUrl as exc:
        raise bad(400, "invalid", str(exc), f"{path}.request.url") from None
    if method == "GET":
        if parsed.resource_id is not None:
            return BundleOp(index, method, parsed)
        return BundleOp(index, method, parsed, query=search_query(parsed, f"{path}.request.url"))
    return _plan_write(index, entry, request, method, parsed)


def _plan_write(
    index: int, entry: dict[str, Any], request: dict[str, Any], method: str, parsed: RequestUrl
) -> BundleOp:
    path = entry_path(index)
    resource = entry.get("resource")
    if not isinstance(resource, dict):
        raise bad(400, "required", f"A {method} entry needs a resource", f"{path}.resource")
    rtype = resource.get("resourceType")
    if rtype != parsed.resource_type:
        raise bad(
            400,
            "invalid",
            f"request.url names {parsed.resource_type}, the resource is {rtype}",
            f"{path}.request.url",
        )
    if rtype not in BUNDLE_TYPES:
        raise bad(
            405, "not-supported", f"{method} of {rtype} is not supported", f"{path}.request.url"
        )
    full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
    if method == "POST":
        if parsed.resource_id is not None or parsed.conditional:
            raise bad(
                400, "invalid", "A POST entry's url is the resource type", f"{path}.request.url"
            )
        ine = request.get("ifNoneExist")
        query = None
        if ine is not None:
            query = conditional_query(rtype, parse_query(str(ine)), f"{path}.request.ifNoneExist")
            _check_condition_agrees(query, resource, f"{path}.request.ifNoneExist")
        return BundleOp(index, method, parsed, resource, full_url, if_none_exist=query)
    if parsed.resource_id is None and not parsed.conditional:
        raise bad(
            400, "invalid", "A PUT entry's url is Type/id or Type?parameters", f"{path}.request.url"
        )
    if parsed.resource_id is not None and resource.get("id") != parsed.resource_id:
        raise bad(
            400,
            "invalid",
            "The resource id must equal the id in request.url",
            f"{entry_path(index, rtype)}.id",
        )
    if_match = request.get("ifMatch")
    return BundleOp(
        index,
        method,
        parsed,
        resource,
        full_url,
        if_match=parse_if_match(str(if_match), f"{path}.request.ifMatch") if if_match else None,
        query=conditional_query(rtype, parsed.params or (), f"{path}.request.url")
        if parsed.conditional
        else None,
    )


def _check_condition_agrees(query: SearchQuery, resource: dict[str, Any], expression: str) -> None:
    """An identifier-only ``ifNoneExist`` must name one of the resource's own identifiers: a
    stale condition would answer with another resource on file and drop this one unseen."""
    if any(c.name != "identifier" or c.modifier for c in query.criteria):
        return
    idents = [i for i in resource.get("identifier") or [] if isinstance(i, dict)]
    for crit in query.criteria:
        if not any(token_matches(v, i) for v in crit.values for i in idents):
            raise bad(
                422,
                "invariant",
                "ifNoneExist names an identifier the resource does not carry",
                expression,
            )


def token_matches(value: Any, identifier: dict[str, Any]) -> bool:
    if not isinstance(value, TokenValue):
        return False
    if value.code is not None and identifier.get("value") != value.code:
        return False
    return not value.system_given or identifier.get("system") == value.system
