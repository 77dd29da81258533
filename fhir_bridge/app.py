"""The application factory: settings, runtime, logging, request ids, error handlers, blueprints."""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from pathlib import Path

from flask import Flask, Response, g, request

from fhir_bridge import metrics, tracing
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.logs import configure_logging, new_request_id, request_id_var
from fhir_bridge.mapping.tables import MappingTables, load_tables
from fhir_bridge.records.schemas import preload_icd10cm
from fhir_bridge.records.vocabulary import Vocabulary
from fhir_bridge.services.runtime import Runtime, build_runtime
from fhir_bridge.settings import Settings

access_log = logging.getLogger("fhir_bridge.access")


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Flask:
    """Build the Flask app; nothing is connected or configured at import time."""
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    if not settings.testing:
        configure_logging(settings.log_level, json=settings.log_json)
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, TESTING=settings.testing)
    from fhir_bridge.api import http

    http.install(app)  # bad JSON is a ValueError everywhere; large bodies wait for the view
    app.json.sort_keys = False  # type: ignore[attr-defined]
    rt = runtime or build_runtime(settings)
    app.extensions["fhir_bridge"] = rt

    tables = load_configured_tables(settings)
    app.extensions["fhir_bridge_tables"] = tables
    app.extensions["fhir_bridge_vocabulary"] = Vocabulary.from_tables(tables)
    preload_icd10cm()  # ~3 s once per process, not on the first clinic request

    _register_request_ids(app)

    from fhir_bridge.api import security

    security.init_app(app, settings)  # after request ids: refusals carry one too

    from fhir_bridge.api import errors
    from fhir_bridge.api.api_docs import api_docs
    from fhir_bridge.api.bulk_export import bulk_api
    from fhir_bridge.api.deliveries import deliveries_api
    from fhir_bridge.api.fhir_read import fhir_read
    from fhir_bridge.api.fhir_write import fhir_write
    from fhir_bridge.api.health import health
    from fhir_bridge.api.metrics import metrics_api
    from fhir_bridge.api.operations import operations
    from fhir_bridge.api.partners import partners_api
    from fhir_bridge.api.progress_reports import progress_reports_api
    from fhir_bridge.api.referrals import referrals_api
    from fhir_bridge.api.sessions import sessions_api
    from fhir_bridge.api.terminology import terminology

    errors.init_app(app)
    app.register_blueprint(health)
    app.register_blueprint(metrics_api)
    app.register_blueprint(terminology)
    app.register_blueprint(operations)
    app.register_blueprint(bulk_api)  # its static paths (Group, $export) before fhir_read's
    app.register_blueprint(fhir_write)  # before fhir_read: its POST/PUT routes win
    app.register_blueprint(fhir_read)
    app.register_blueprint(sessions_api)
    app.register_blueprint(api_docs)
    app.register_blueprint(referrals_api)
    app.register_blueprint(progress_reports_api)
    app.register_blueprint(partners_api)
    app.register_blueprint(deliveries_api)

    from fhir_bridge import console

    console.init_app(app, settings)  # the clinic console: its own login, pages at /
    # FHIR_BRIDGE_OTEL=on: spans for requests, their statements and outbound HTTP (else no-op)
    tracing.instrument_app(app, rt.engine, settings)
    return app


def load_configured_tables(settings: Settings) -> MappingTables:
    """Tables of FHIR_BRIDGE_MAPPINGS_DIR or the shipped ones; MappingError stops start-up."""
    return load_tables(Path(settings.mappings_dir) if settings.mappings_dir else None)


def _refuse_nul_in_url() -> None:
    """A NUL character is never a valid id or search value (and PostgreSQL text cannot hold it)."""
    args = request.args.items(multi=True)
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in args):
        raise FhirError(400, error("invalid", "The request URL contains a NUL character", "url"))


#: where RFC 9110 renamed a phrase Python 3.11 still spells the RFC 7231 way
_RFC9110_PHRASES = {
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}


def reason_phrase(code: int) -> str:
    """The status line's ``code phrase`` as RFC 9110 15 writes it (``401 Unauthorized``):
    Werkzeug sends upper case (``401 UNAUTHORIZED``), which some OAuth clients reject."""
    try:
        return f"{code} {_RFC9110_PHRASES.get(code) or HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _register_request_ids(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.request_id = new_request_id(request.headers.get("X-Request-ID"))
        g.started = time.perf_counter()
        request_id_var.set(g.request_id)
        _refuse_nul_in_url()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.status = reason_phrase(response.status_code)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        # The route pattern, never the concrete path or query: those can carry PHI.
        rule = request.url_rule.rule if request.url_rule else "<unmatched>"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "route": rule,
                "status": response.status_code,
                "ms": round(seconds * 1000, 2),
            },
        )
        metrics.observe_request(rule, request.method, response.status_code, seconds)
        token = g.get("audit_token")
        if token:
            metrics.observe_token(token["outcome"])
        return response
