"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from fhir_bridge.api.http import runtime
from fhir_bridge.services.health import readiness

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """The process is up and answering."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the database answers and its schema is at the shipped migration head."""
    state = readiness(runtime())
    if not state.reachable:
        return jsonify(status="unavailable", database="unreachable"), 503
    if not state.ready:
        return jsonify(
            status="unavailable",
            database="reachable",
            migration=state.migration,
            expected=state.expected,
        ), 503
    return jsonify(status="ok", database="reachable", migration=state.migration), 200
