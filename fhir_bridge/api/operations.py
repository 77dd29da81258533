"""Operations for payers' reviews: ``Patient/$everything``, ``ServiceRequest/$documentation``."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request

from fhir_bridge.api.disclosure import disclose, mark_operation
from fhir_bridge.api.http import fhir_response, negotiate, runtime
from fhir_bridge.api.paging import whole_number
from fhir_bridge.api.security import current_principal, current_scope
from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.bundles import searchset
from fhir_bridge.fhir.dates import parse_fhir_datetime_range
from fhir_bridge.fhir.outcome import FhirError, error, warning
from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.search_query import MAX_COUNT
from fhir_bridge.services import documentation as docs
from fhir_bridge.services.access_policy import COMPARTMENT_TYPES
from fhir_bridge.services.documentation import EverythingQuery

operations = Blueprint("operations", __name__, url_prefix="/fhir")

EVERYTHING_PARAMS = {"start", "end", "_since", "_type", "_count", "_cursor", "_format", "_pretty"}
DEFAULT_COUNT = 100


@operations.before_request
def _negotiate() -> None:
    negotiate()


def _date(name: str, *, upper: bool = False):
    value = request.args.get(name)
    if value is None:
        return None
    try:
        low, high = parse_fhir_datetime_range(value)
    except ValueError:
        raise FhirError(400, error("invalid", f"{name} is not a FHIR date", name)) from None
    return high if upper else low


def _count() -> int:
    count = whole_number(request.args.get("_count", str(DEFAULT_COUNT)))
    if count is None or count < 1:
        raise FhirError(
            400, error("invalid", "_count must be a whole number of 1 or more", "_count")
        )
    return min(count, MAX_COUNT)


def _types() -> list[str]:
    raw = request.args.get("_type")
    if raw is None:
        return []
    types = [t.strip() for t in raw.split(",") if t.strip()]
    known = COMPARTMENT_TYPES | {"Patient"}
    unknown = [t for t in types if t not in known]
    if unknown:
        raise FhirError(
            400,
            error(
                "not-supported", f"_type names types outside the compartment: {unknown}", "_type"
            ),
        )
    return types


@operations.get("/Patient/<resource_id>/$everything")
def patient_everything(resource_id: str) -> Response:
    """The patient's records (paged), within the caller's scope and token."""
    unknown = sorted(set(request.args) - EVERYTHING_PARAMS)
    if unknown:
        raise FhirError(400, error("not-supported", f"Unknown parameter {unknown[0]}", unknown[0]))
    principal = current_principal()
    start, end = _date("start"), _date("end", upper=True)
    readable = [t for t in ("Patient", *sorted(COMPARTMENT_TYPES)) if principal.may(t, "read")]
    wanted = _types() or readable
    query = EverythingQuery(
        patient_id=resource_id,
        types=[t for t in wanted if t in readable],
        start=start,
        end=end,
        since=_date("_since"),
        count=_count(),
        cursor=request.args.get("_cursor"),
    )
    rt = runtime()
    scope = current_scope()  # start/end narrow the records below, never the membership
    mark_operation("Patient-everything")
    page = docs.patient_everything(rt, query, scope)
    disclose([*page.matches, *page.included])
    base = rt.settings.fhir_base_url
    kept = [(k, v) for k, v in request.args.items(multi=True) if k != "_cursor"]

    def link(cursor: str | None) -> str:
        qs = urlencode(kept + ([("_cursor", cursor)] if cursor else []))
        return f"{base}/Patient/{resource_id}/$everything" + (f"?{qs}" if qs else "")

    body = searchset(
        base_url=base,
        self_link=link(query.cursor),
        matches=page.matches,
        included=page.included,
        next_link=link(page.next_cursor) if page.next_cursor else None,
        parse=jsonio.loads,
    )
    return fhir_response(body)


@operations.get("/ServiceRequest/<resource_id>/$documentation")
def service_request_documentation(resource_id: str) -> Response:
    """The medical-necessity package behind one prescription, in one searchset Bundle."""
    principal = current_principal()
    rt = runtime()
    readable = {t for t in SEARCH_PARAMS if principal.may(t, "read")}
    mark_operation("ServiceRequest-documentation")
    package = docs.documentation(
        rt, resource_id, current_scope(), readable, current_app.extensions["fhir_bridge_tables"]
    )
    disclose([package.service_request, *package.supporting])
    base = rt.settings.fhir_base_url
    issues = []
    if package.truncated:
        issues.append(
            warning("too-costly", f"More than {docs.MAX_VISITS} visits: the package is cut", "url")
        )
    body = searchset(
        base_url=base,
        self_link=f"{base}/ServiceRequest/{resource_id}/$documentation",
        matches=[package.service_request],
        included=package.supporting,
        issues=issues,
        parse=jsonio.loads,
    )
    entries = body.setdefault("entry", [])
    summary = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": obs, "search": {"mode": "include"}}
        for obs in package.summary
    ]
    outcome_at = next((i for i, e in enumerate(entries) if e["search"]["mode"] == "outcome"), None)
    if outcome_at is None:
        entries.extend(summary)
    else:
        entries[outcome_at:outcome_at] = summary
    body["total"] = 1
    return fhir_response(body)
