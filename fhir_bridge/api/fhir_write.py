"""FHIR write side under /fhir: create, conditional create, update, transaction and batch.

Direct ``POST /fhir/{type}`` and ``PUT /fhir/{type}/{id}`` exist for the referral resources
(ServiceRequest, Task); the routes name them, so every other type falls through to the read
blueprint's 405. ``POST /fhir`` takes a transaction or batch Bundle. Bodies are
application/fhir+json (application/json accepted); headers follow FHIR R4 http.html.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, request

from fhir_bridge.api.bundle_response import RETURN_PREFERENCES, bundle_response, informational
from fhir_bridge.api.disclosure import (
    disclose,
    disclose_patients,
    mark_operation,
    mark_written,
)
from fhir_bridge.api.http import fhir_response, http_date, negotiate, runtime
from fhir_bridge.api.security import current_principal, current_scope
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.services import access_policy, cdex
from fhir_bridge.services import fhir_write as writes
from fhir_bridge.services.access_policy import WriteAccess
from fhir_bridge.services.fhir_write import DIRECT_TYPES, Inbound, WriteResult
from fhir_bridge.services.referral_intake import IntakePolicy

fhir_write = Blueprint("fhir_write", __name__, url_prefix="/fhir")

ACCEPTED_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_WRITABLE = f"any({', '.join(DIRECT_TYPES)})"


@fhir_write.before_request
def _negotiate() -> None:
    negotiate()


def _inbound() -> Inbound:
    if request.mimetype not in ACCEPTED_TYPES:
        raise FhirError(
            415,
            error("not-supported", "Send FHIR resources as application/fhir+json", "Content-Type"),
        )
    return Inbound(
        body=request.get_data(cache=False),
        method=request.method,
        path=request.path,
        content_type=request.content_type,
        request_id=g.get("request_id"),
    )


def _access(is_data_request: bool = False) -> WriteAccess:
    """The caller's write rights (the access policy); payers only ask CDex questions."""
    access = access_policy.write_access(runtime(), current_principal())
    access.check_payer(is_data_request)
    return access


def intake_policy() -> IntakePolicy:
    """Referral intake settings for this request (the value set, the clinic, now)."""
    settings = runtime().settings
    tables = current_app.extensions["fhir_bridge_tables"]
    principal = current_principal()
    return IntakePolicy(
        services=tables.referral_services,
        clinic_name=settings.clinic_name,
        clinic_npi=settings.clinic_npi,
        clinic_system_base=settings.clinic_system_base,
        sender_organization=(
            access_policy.organization_id(principal) if principal.role == "ehr" else None
        ),
        sender_client=principal.client_id,
    )


def prefer_return() -> str:
    """The ``Prefer: return=`` choice; representation when absent or unknown."""
    for part in request.headers.get("Prefer", "").replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "return" and value.strip() in RETURN_PREFERENCES:
            return value.strip()
    return "representation"


def _written(result: WriteResult) -> Response:
    stored = result.stored
    mark_written(stored.reference)
    base = runtime().settings.fhir_base_url
    headers = {
        "Location": f"{base}/{stored.reference}/_history/{stored.version_id}",
        "ETag": stored.etag,
        "Last-Modified": http_date(stored.last_updated),
    }
    prefer = prefer_return()
    if prefer == "minimal":
        response = Response(status=result.status)
        for key, value in headers.items():
            response.headers[key] = value
        return response
    if prefer == "OperationOutcome":
        return fhir_response(informational(result), result.status, headers)
    return fhir_response(stored.content, result.status, headers)


@fhir_write.post(f"/<{_WRITABLE}:resource_type>")
def create(resource_type: str) -> Response:
    """Create (201), or with If-None-Exist answer the one match (200).

    A CDex data-request Task is answered at once (services/cdex.py) instead of taken in.
    """
    inbound = _inbound()
    is_data_request = resource_type == "Task" and cdex.is_data_request_body(inbound.body)
    access = _access(is_data_request)
    if is_data_request:
        settings = runtime().settings
        mark_operation("cdex-data-request")
        answer = cdex.receive(
            runtime(),
            inbound,
            current_principal(),
            current_scope(),
            clinic_name=settings.clinic_name,
            tables=current_app.extensions["fhir_bridge_tables"],
        )
        disclose_patients(answer.disclosed_patients)
        return _written(answer)
    result = writes.create(
        runtime(),
        resource_type,
        inbound,
        if_none_exist=request.headers.get("If-None-Exist"),
        policy=intake_policy(),
        access=access,
    )
    return _written(result)


@fhir_write.put(f"/<{_WRITABLE}:resource_type>/<resource_id>")
def update(resource_type: str, resource_id: str) -> Response:
    """Update (200) or create with the client's id (201); If-Match makes it version-aware."""
    access = _access()
    inbound = _inbound()
    header = request.headers.get("If-Match")
    if_match = writes.parse_if_match(header) if header else None
    return _written(
        writes.update(
            runtime(),
            resource_type,
            resource_id,
            inbound,
            if_match=if_match,
            policy=intake_policy(),
            access=access,
        )
    )


@fhir_write.post("", strict_slashes=False)
def bundle() -> Response:
    """A transaction (all or nothing) or batch (entry by entry) Bundle."""
    # a payer may read through a batch; each write entry is checked by the policy (403)
    access = access_policy.write_access(runtime(), current_principal())
    outcome = writes.process_bundle(
        runtime(), _inbound(), policy=intake_policy(), access=access, scope=current_scope()
    )
    body = bundle_response(
        outcome,
        runtime().settings.fhir_base_url,
        prefer_return(),
        on_read=lambda stored: disclose([stored]),
    )
    return fhir_response(body)
