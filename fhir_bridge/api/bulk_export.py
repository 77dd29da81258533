"""Bulk Data Access IG 2.0.0 ``$export`` under /fhir: kick-off, status, cancel, files, Group.

Kick-off (``GET`` or ``POST`` with Parameters) at ``/fhir/$export`` (clinic admins),
``/fhir/Patient/$export`` and ``/fhir/Group/{id}/$export`` answers 202 with the status URL in
``Content-Location``; the worker runs the job. The status URL answers 202 with
``X-Progress``/``Retry-After`` while it runs, 200 with the manifest when done, 500 with an
OperationOutcome if it failed; ``DELETE`` cancels (202), after which it is 404. Files are
``application/fhir+ndjson`` for the same client's bearer token only, until they expire.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Response, request

from fhir_bridge.api.disclosure import disclose_patients, mark_operation
from fhir_bridge.api.http import fhir_response, http_date, negotiate, parse_json_body, runtime
from fhir_bridge.api.security import current_principal
from fhir_bridge.fhir.bulk_request import NDJSON, parameters_pairs, parse_export
from fhir_bridge.fhir.outcome import FhirError, Issue, error, operation_outcome
from fhir_bridge.services import bulk_export
from fhir_bridge.services.authorization import utcnow
from fhir_bridge.services.bulk_export import RETRY_AFTER_SECONDS

bulk_api = Blueprint("bulk_export", __name__, url_prefix="/fhir")


def _prefers(token: str) -> bool:
    prefer = request.headers.get("Prefer", "")
    parts = [p.strip().lower() for p in prefer.replace(";", ",").split(",")]
    return token in parts


def _kick_off(level: str, group_id: str | None = None) -> Response:
    negotiate()
    if not _prefers("respond-async"):
        raise FhirError(
            400,
            error("invalid", "A $export kick-off needs Prefer: respond-async", "http.Prefer"),
        )
    params = list(request.args.items(multi=True))
    if request.method == "POST":
        params += parameters_pairs(parse_json_body(request.get_data(), "Parameters"))
    export = parse_export(level, params, group_id=group_id, lenient=_prefers("handling=lenient"))
    rt = runtime()
    # the manifest's ``request``: the kick-off URL under the public base (never the Host header)
    asked = rt.settings.public_base_url.rstrip("/") + request.full_path.rstrip("?")
    job_id = bulk_export.kick_off(rt, current_principal(), export, asked)
    mark_operation("export")
    status_url = f"{rt.settings.fhir_base_url}/$export-status/{job_id}"
    outcome = operation_outcome(
        [Issue("information", "informational", "The export was accepted; poll Content-Location")]
    )
    return fhir_response(outcome, 202, {"Content-Location": status_url})


@bulk_api.route("/$export", methods=["GET", "POST"])
def system_export() -> Response:
    """System-level export (clinic admins)."""
    return _kick_off("system")


@bulk_api.route("/Patient/$export", methods=["GET", "POST"])
def patient_export() -> Response:
    """Every patient the caller may see, with their records."""
    return _kick_off("patient")


@bulk_api.route("/Group/<group_id>/$export", methods=["GET", "POST"])
def group_export(group_id: str) -> Response:
    """The members of a payer's Group (as far as the caller may see them)."""
    return _kick_off("group", group_id)


@bulk_api.get("/Group/<group_id>")
def read_group(group_id: str) -> Response:
    """A payer's member Group, computed from its Coverages."""
    negotiate()
    return fhir_response(bulk_export.read_group(runtime(), current_principal(), group_id))


@bulk_api.get("/$export-status/<job_id>")
def export_status(job_id: str) -> Response:
    """202 while running, 200 with the manifest, 500 with the failure's OperationOutcome."""
    rt = runtime()
    status = bulk_export.job_status(
        rt, current_principal().client_id, job_id, rt.settings.fhir_base_url
    )
    if status.manifest is not None:
        return fhir_response(status.manifest, 200, {"Expires": _expires(status.expires_in or 0)})
    if status.outcome is not None:
        return fhir_response(status.outcome, 500)
    response = Response(status=202)
    response.headers["X-Progress"] = status.progress or "in progress"
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@bulk_api.delete("/$export-status/<job_id>")
def cancel_export(job_id: str) -> Response:
    """Cancel the export: 202, then its status and files are 404."""
    bulk_export.cancel(runtime(), current_principal().client_id, job_id)
    outcome = operation_outcome([Issue("information", "informational", "The export was cancelled")])
    return fhir_response(outcome, 202)


@bulk_api.get("/$export-file/<job_id>/<name>")
def export_file(job_id: str, name: str) -> Response:
    """One NDJSON file of a completed export (the same client only)."""
    path, patients = bulk_export.export_file(runtime(), current_principal().client_id, job_id, name)
    mark_operation("export")
    disclose_patients(patients)
    # streamed in chunks, not passed through: the audit hook runs when the response closes
    response = Response(_chunks(path), mimetype=NDJSON)
    response.headers["Content-Type"] = NDJSON
    response.headers["Content-Length"] = str(path.stat().st_size)
    return response


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


def _expires(seconds: int) -> str:
    return http_date(utcnow() + timedelta(seconds=seconds))
