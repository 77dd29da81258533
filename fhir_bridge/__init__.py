"""fhir-bridge: FHIR R4 integration service for medical-massage clinics."""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(settings=None):
    """Build the Flask application (see :func:`fhir_bridge.app.create_app`)."""
    from fhir_bridge.app import create_app as _create_app

    return _create_app(settings)
