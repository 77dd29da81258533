"""WSGI entry point for gunicorn: the only module-level application."""

from __future__ import annotations

from fhir_bridge.app import create_app

app = create_app()
