"""Every error becomes an OperationOutcome: FhirError, routing errors, and unexpected failures."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fhir_bridge.api.http import fhir_response
from fhir_bridge.fhir.outcome import FhirError, Issue, error, operation_outcome
from fhir_bridge.logs import safe_trace
from fhir_bridge.services.health import DatabaseError, database_unreachable

log = logging.getLogger(__name__)

#: what a 503 asks a client to wait before retrying while the database is unreachable (the
#: bridge itself reconnects on the next request: pool_pre_ping)
DATABASE_RETRY_AFTER_SECONDS = 5

_HTTP_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    429: "throttled",
}


def _outcome(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    return fhir_response(operation_outcome(issues), status, headers)


def handle_fhir_error(exc: FhirError) -> Response:
    """Render a FhirError with its own status and issues."""
    return _outcome(exc.status, exc.issues)


def handle_http_exception(exc: HTTPException) -> Response:
    """Routing and protocol errors (404, 405, 413 ...) as OperationOutcome, never HTML."""
    status = exc.code or 500
    code = _HTTP_ISSUE_CODES.get(status, "exception")
    # what is wrong is the request line or a header, not a resource element: name that
    expression: str | None = None
    if status == 404:
        message, expression = f"No FHIR endpoint at {request.path}", "url"
    elif status == 405:
        message, expression = f"{request.method} is not supported on {request.path}", "method"
    elif status == 413:
        message, expression = "Request body is larger than the bridge accepts", "Content-Length"
    else:
        message = exc.description or exc.name
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return _outcome(status, [error(code, message, *([expression] if expression else []))], headers)


def handle_unexpected(exc: Exception) -> Response:
    """A bug: log it (types and stack frames, never messages or the body) and answer 500
    without details."""
    log.error("unhandled error", extra={"error_type": type(exc).__name__, "trace": safe_trace(exc)})
    return _outcome(
        500, [error("exception", "Internal error; it has been logged with this request's id")]
    )


def handle_database_error(exc: DatabaseError) -> Response:
    """Database unreachable: 503 ``transient`` with ``Retry-After``; anything else is a bug."""
    if not database_unreachable(exc):
        return handle_unexpected(exc)
    orig = getattr(exc, "orig", None)
    log.warning(
        "database unavailable",
        extra={
            "error_type": type(orig or exc).__name__,
            "sqlstate": getattr(orig, "sqlstate", None),
        },
    )
    return _outcome(
        503,
        [error("transient", "The database is unavailable; retry after the time given")],
        {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def init_app(app: Flask) -> None:
    """Register the handlers on the app."""
    app.register_error_handler(FhirError, handle_fhir_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DatabaseError, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)
