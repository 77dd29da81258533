"""FHIR read side under /fhir: metadata, read, vread, history and search (GET and POST)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from fhir_bridge.api.disclosure import disclose, disclose_patients
from fhir_bridge.api.http import fhir_response, http_date, negotiate, runtime
from fhir_bridge.api.paging import decode_cursor, next_link, refuse_unknown, whole_number
from fhir_bridge.api.security import current_scope
from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.bundles import history_bundle, searchset
from fhir_bridge.fhir.capability import capability_statement
from fhir_bridge.fhir.dates import parse_fhir_datetime_range, to_instant
from fhir_bridge.fhir.outcome import FhirError, error, operation_outcome
from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.search_query import MAX_COUNT, SearchQuery, parse_search
from fhir_bridge.fhir.summary import summary_elements
from fhir_bridge.fhir.transaction import DIRECT_WRITE_TYPES
from fhir_bridge.services import resources
from fhir_bridge.services.history import instance_history
from fhir_bridge.services.reference_ids import resolve_bare_ids
from fhir_bridge.services.resources import SearchPage, StoredResource, named_patients

fhir_read = Blueprint("fhir_read", __name__, url_prefix="/fhir")

TRANSPORT_PARAMS = {"_format", "_pretty"}


@fhir_read.before_request
def _negotiate() -> None:
    negotiate()


def _known_type(resource_type: str) -> None:
    if resource_type not in SEARCH_PARAMS:
        raise FhirError(
            404,
            error(
                "not-supported", f"Resource type {resource_type} is not supported by this server"
            ),
        )


def _version_number(vid: str) -> int:
    number = whole_number(vid)
    if number is None:
        raise FhirError(404, error("not-found", f"Version {vid[:20]} is not known"))
    return number


def _resource_response(stored: StoredResource, status: int = 200) -> Response:
    headers = {
        "ETag": stored.etag,
        "Last-Modified": http_date(stored.last_updated),
        "Content-Location": (
            f"{runtime().settings.fhir_base_url}/{stored.reference}/_history/{stored.version_id}"
        ),
    }
    if _not_modified(stored):
        response = Response(status=304)
        for key, value in headers.items():
            response.headers[key] = value
        return response
    return fhir_response(stored.content, status, headers)


def _not_modified(stored: StoredResource) -> bool:
    """If-None-Match decides when present; else If-Modified-Since (to the second)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match:
        return _etag_matches(if_none_match, stored.version_id)
    since = request.if_modified_since
    if since is not None:
        return stored.last_updated.replace(microsecond=0) <= since.replace(tzinfo=None)
    return False


def _etag_matches(header: str, version_id: int) -> bool:
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == str(version_id):
            return True
    return False


@fhir_read.get("/metadata")
def metadata() -> Response:
    """The CapabilityStatement."""
    rt = runtime()
    from importlib.metadata import version

    body = capability_statement(
        base_url=rt.settings.fhir_base_url,
        software_version=version("fhir-bridge"),
        date=rt.started_at,
    )
    return fhir_response(body)


@fhir_read.get("/<resource_type>/<resource_id>")
def read(resource_type: str, resource_id: str) -> Response:
    """Read the current version of a resource."""
    _known_type(resource_type)
    stored = resources.read(runtime(), resource_type, resource_id, current_scope())
    disclose([stored])
    return _resource_response(stored)


@fhir_read.get("/<resource_type>/<resource_id>/_history/<vid>")
def vread(resource_type: str, resource_id: str, vid: str) -> Response:
    """Read one version of a resource."""
    _known_type(resource_type)
    stored = resources.vread(
        runtime(), resource_type, resource_id, _version_number(vid), current_scope()
    )
    disclose([stored])
    return _resource_response(stored)


HISTORY_PARAMS = {"_since", "_count", "_cursor", *TRANSPORT_PARAMS}


def _history_args() -> tuple[datetime | None, int | None, int | None]:
    """``_since`` (an instant: versions changed at or after it), ``_count`` (page size) and the
    ``_cursor`` of a next link; 400 naming the parameter when one is not valid."""
    refuse_unknown(request.args, HISTORY_PARAMS)
    since = None
    if (raw := request.args.get("_since")) is not None:
        try:
            since = parse_fhir_datetime_range(raw)[0]
        except ValueError:
            raise FhirError(
                400, error("invalid", f"_since={raw!r} is not a FHIR instant", "_since")
            ) from None
    count = None
    if (raw := request.args.get("_count")) is not None:
        count = whole_number(raw)
        if count is None or not 1 <= count <= MAX_COUNT:
            raise FhirError(400, error("invalid", f"_count must be 1-{MAX_COUNT}", "_count"))
    return since, count, decode_cursor(request.args.get("_cursor"))


@fhir_read.get("/<resource_type>/<resource_id>/_history")
def history(resource_type: str, resource_id: str) -> Response:
    """The versions of a resource, newest first: ``_since``, ``_count``, paged with ``next``."""
    _known_type(resource_type)
    since, count, below = _history_args()
    rt = runtime()
    page = instance_history(
        rt, resource_type, resource_id, current_scope(), since=since, below=below, count=count
    )
    disclose(page.versions[:1])  # every version is of the same resource, in the same compartment
    path = f"{rt.settings.fhir_base_url}/{resource_type}/{resource_id}/_history"
    kept = [(k, v) for k, v in request.args.items(multi=True) if k not in TRANSPORT_PARAMS]
    query = urlencode(kept)
    body = history_bundle(
        base_url=rt.settings.fhir_base_url,
        self_link=path + (f"?{query}" if query else ""),
        versions=page.versions,
        last_modified=lambda v: to_instant(v.last_updated),
        total=page.total,
        next_link=(
            next_link(path, dict(kept), page.next_below) if page.next_below is not None else None
        ),
    )
    return fhir_response(body)


@fhir_read.route("/<resource_type>", methods=["GET"])
def search_get(resource_type: str) -> Response:
    """Search with query-string parameters."""
    return _search(resource_type, list(request.args.items(multi=True)))


@fhir_read.route("/<resource_type>/_search", methods=["POST"])
def search_post(resource_type: str) -> Response:
    """Search with form-encoded parameters (and any in the query string)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise FhirError(
            415,
            error(
                "not-supported", "POST _search takes application/x-www-form-urlencoded parameters"
            ),
        )
    params = list(request.args.items(multi=True)) + list(request.form.items(multi=True))
    for key, value in params:  # the URL's are refused in app.py; PostgreSQL cannot hold a NUL
        if "\x00" in key or "\x00" in value:
            raise FhirError(
                400,
                error(
                    "invalid",
                    "A search parameter contains a NUL character",
                    key.replace("\x00", "") or "body",
                ),
            )
    return _search(resource_type, params)


def _lenient() -> bool:
    prefer = request.headers.get("Prefer", "")
    return any(
        p.strip().lower() == "handling=lenient" for p in prefer.split(";") + prefer.split(",")
    )


def _disclosed(query: SearchQuery, page: SearchPage) -> None:
    """Tell the audit trail whose records the page shows: a search of one patient's
    compartment without includes shows only that patient's (no lookup needed)."""
    named = named_patients(query)
    if named and len(named) == 1 and not (query.includes or query.revincludes):
        if page.matches:
            disclose_patients(named)
        return
    disclose([*page.matches, *page.included])


def _search(resource_type: str, params: list[tuple[str, str]]) -> Response:
    _known_type(resource_type)
    rt = runtime()
    query = parse_search(resource_type, params, lenient=_lenient())
    query = resolve_bare_ids(rt, query, current_scope())
    page = resources.search(rt, query, current_scope())
    _disclosed(query, page)
    return fhir_response(search_bundle(rt.settings.fhir_base_url, params, query, page))


def search_bundle(
    base: str, params: Sequence[tuple[str, str]], query: SearchQuery, page: SearchPage
) -> dict[str, Any]:
    """The searchset ``GET [base]/Type?params`` answers with (a batch's search entries too):
    self, next and previous links keep the parameters and carry the page's ``_cursor``."""
    kept = [(k, v) for k, v in params if k != "_cursor" and k not in TRANSPORT_PARAMS]

    def link(cursor: str | None) -> str:
        extra = [("_cursor", cursor)] if cursor else []
        qs = urlencode(kept + extra)
        return f"{base}/{query.resource_type}" + (f"?{qs}" if qs else "")

    return searchset(
        base_url=base,
        self_link=link(query.cursor),
        matches=page.matches,
        included=page.included,
        total=page.total,
        next_link=link(page.next_cursor) if page.next_cursor else None,
        previous_link=link(page.previous_cursor) if page.previous_cursor else None,
        issues=query.issues,
        elements=query.elements
        or (summary_elements(query.resource_type) if query.summary == "true" else None),
        parse=jsonio.loads,
    )


@fhir_read.route("/<resource_type>/<resource_id>", methods=["PUT", "DELETE", "PATCH", "POST"])
@fhir_read.route("/<resource_type>", methods=["POST", "PUT", "DELETE", "PATCH"])
def not_supported(resource_type: str, resource_id: str | None = None) -> Response:
    """Interactions the bridge does not offer on this resource yet: 405 with an outcome.

    POST/PUT of the directly writable types never get here: fhir_write (registered first)
    routes them by name. Everything else (DELETE, PATCH, other types) answers 405.
    """
    _known_type(resource_type)
    allow = "GET"
    if resource_type in DIRECT_WRITE_TYPES:
        allow = "GET, PUT" if resource_id else "GET, POST"
    outcome = operation_outcome(
        [
            error(
                "not-supported",
                f"{request.method} on {resource_type} is not supported by this server",
            )
        ]
    )
    return fhir_response(outcome, 405, {"Allow": allow})
