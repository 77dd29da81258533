"""The clinic console: server-rendered pages for the front desk, therapists and the clinic admin.

Staff log in with a username and password (``fhir-bridge users``); the console keeps its own
signed session cookie and never uses the API's bearer tokens (``api.security.guard`` lets the
``console`` blueprint through). Every action goes through the API's services, acting as a
``Principal`` named ``user:<username>``; pages that show PHI leave an AuditEvent like the API.
"""

from __future__ import annotations

from flask import Blueprint

console = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)

# the views register their routes on ``console`` when imported
from fhir_bridge.console import (  # noqa: E402
    auth,  # noqa: F401
    views_admin,  # noqa: F401
    views_reports,  # noqa: F401
    views_work,  # noqa: F401
)
from fhir_bridge.console.setup import init_app  # noqa: E402

__all__ = ["console", "init_app"]
