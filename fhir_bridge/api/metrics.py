"""``GET /metrics``: Prometheus text exposition (``fhir_bridge.metrics``), for admins and
the metrics scraper.

It holds no PHI (route patterns, partner keys, statuses, counts), but it does tell how busy
the clinic is and with whom it exchanges data, so it is not open: the caller needs an admin
credential, like the rest of the operator's API (development mode: no token needed), or the
bearer secret FHIR_BRIDGE_METRICS_TOKEN (``_FILE``), which opens this endpoint and nothing else
(Prometheus: ``authorization: {credentials_file: ...}``; ``api.security`` checks it).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app

from fhir_bridge.api.http import runtime
from fhir_bridge.api.security import SCRAPER_PRINCIPAL, current_principal
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.metrics import StoreCollector, exposition

metrics_api = Blueprint("metrics", __name__)

#: Prometheus text format 0.0.4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@metrics_api.get("/metrics")
def metrics() -> Response:
    """The bridge's metrics; 403 for any role but admin (and the metrics scraper)."""
    principal = current_principal()
    if principal.role != "admin" and principal is not SCRAPER_PRINCIPAL:
        raise FhirError(
            403,
            error("forbidden", "Metrics are shown to admin credentials only", "http.Authorization"),
        )
    trail = current_app.extensions.get("fhir_bridge_audit")
    spool = getattr(trail, "spool_dir", None)
    store = StoreCollector(runtime(), Path(spool) if spool else None)
    return Response(exposition(store), content_type=CONTENT_TYPE)
