"""The partner registry, read-only (/api/v1/partners): the same safe view as ``partners show``.

Views show the auth kind and the SMART client id, token URL, algorithm and scopes; never where
a token or key lives, let alone its value. Partners are registered with the CLI only.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from fhir_bridge.api.http import runtime
from fhir_bridge.api.paging import refuse_unknown
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.services import partners as service

partners_api = Blueprint("partners_api", __name__, url_prefix="/api/v1")


@partners_api.get("/partners")
def index() -> Response:
    """Every partner, enabled or not, by key."""
    refuse_unknown(request.args, set())
    return jsonify(
        {"partners": [service.partner_view(p) for p in service.list_partners(runtime())]}
    )


@partners_api.get("/partners/<key>")
def read(key: str) -> Response:
    """One partner; 404 OperationOutcome when the key is unknown."""
    row = service.find_partner(runtime(), key)
    if row is None:
        raise FhirError(404, error("not-found", "No partner with that key", "key"))
    return jsonify(service.partner_view(row))
