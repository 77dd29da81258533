"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from fhir_bridge.api.http import runtime
from fhir_bridge.store.migrate import current_revision, head_revision

health = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@health.get("/healthz")
def healthz() -> Response:
    """The process is up and answering."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the database answers and its schema is at the shipped migration head."""
    engine = runtime().engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable", extra={"error_type": type(exc).__name__})
        return jsonify(status="unavailable", database="unreachable"), 503
    head = head_revision()
    if current != head:
        return jsonify(
            status="unavailable", database="reachable", migration=current, expected=head
        ), 503
    return jsonify(status="ok", database="reachable", migration=current), 200
