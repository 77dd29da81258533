"""``GET /metrics``: Prometheus text exposition (``fhir_bridge.metrics``), for admins.

It holds no PHI (route patterns, partner keys, statuses, counts), but it does tell how busy
the clinic is and with whom it exchanges data, so it is not open: the caller needs an admin
credential, like the rest of the operator's API (development mode: no token needed).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app

from fhir_bridge.api.http import runtime
from fhir_bridge.api.security import current_principal
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.metrics import StoreCollector, exposition

metrics_api = Blueprint("metrics", __name__)

#: Prometheus text format 0.0.4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@metrics_api.get("/metrics")
def metrics() -> Response:
    """The bridge's metrics; 403 for any role but admin."""
    if current_principal().role != "admin":
        raise FhirError(
            403,
            error("forbidden", "Metrics are shown to admin credentials only", "http.Authorization"),
        )
    trail = current_app.extensions.get("fhir_bridge_audit")
    spool = getattr(trail, "spool_dir", None)
    store = StoreCollector(runtime(), Path(spool) if spool else None)
    return Response(exposition(store), content_type=CONTENT_TYPE)
