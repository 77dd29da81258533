"""OpenTelemetry tracing, off unless ``FHIR_BRIDGE_OTEL=on`` (nothing is imported when off).

When on, each process traces: incoming requests (Flask), their database statements
(SQLAlchemy, statement text only: never the bound parameters) and outbound HTTP (requests,
which sends the W3C ``traceparent`` header to partners and physicians' servers); the delivery
worker adds a ``delivery.send`` span per delivery, with the partner key and the delivery id.
Spans go to the OTLP/HTTP exporter, configured by the SDK's standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, default ``fhir-bridge``).

No PHI leaves in a span: every span is cut down, before export, to an allow-list of attributes
(route patterns, methods, status codes, hosts, SQL statements with placeholders, ids); URLs
keep their origin only (a query or a path can name a patient); exception events keep the
exception type; status descriptions (a database error's text can quote a value) are dropped.
A database statement outside a request or a delivery starts no trace of its own.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fhir_bridge import logs

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy import Engine

    from fhir_bridge.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "fhir-bridge"
#: requests not traced (probes and scrapes: frequent, and nothing to follow)
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"
#: span attributes that may leave the process (old and stable HTTP/DB semantic conventions)
ALLOWED_ATTRIBUTES = frozenset(
    {
        "http.method",
        "http.request.method",
        "http.route",
        "http.status_code",
        "http.response.status_code",
        "http.scheme",
        "url.scheme",
        "http.flavor",
        "network.protocol.version",
        "net.peer.name",
        "net.peer.port",
        "server.address",
        "server.port",
        "db.system",
        "db.system.name",
        "db.name",
        "db.namespace",
        "db.operation",
        "db.operation.name",
        "db.statement",
        "db.query.text",
        "error.type",
        "exception.type",
    }
)
#: attributes holding a URL: kept as its origin (scheme://host:port)
URL_ATTRIBUTES = frozenset({"http.url", "url.full"})
#: attributes this module sets (ids and codes, never PHI)
OWN_PREFIX = "fhir_bridge."


@dataclass
class _Tracing:
    """This process's tracing: the provider of request and delivery spans, and the one for
    database statements (which records a statement only inside a traced request or delivery)."""

    provider: TracerProvider
    db_provider: TracerProvider
    #: engines whose statements are traced
    engines: weakref.WeakSet[Engine] = field(default_factory=weakref.WeakSet)


_active: _Tracing | None = None


def start(settings: Settings, *, exporter: SpanExporter | None = None) -> _Tracing | None:
    """Start tracing in this process when ``settings.otel`` (once; later calls return the same).

    ``exporter`` replaces the OTLP exporter (tests: an in-memory one, exported synchronously).
    Returns None when tracing is off.
    """
    global _active
    if not settings.otel:
        return None
    if _active is not None:
        return _active
    try:
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    except ImportError:
        from fhir_bridge.settings import PREFIX, SettingsError

        raise SettingsError(
            f"{PREFIX}OTEL=on needs the OpenTelemetry packages: pip install 'fhir-bridge[otel]'"
        ) from None

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over the default name
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": DEFAULT_SERVICE_NAME})
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor: Any = BatchSpanProcessor(RedactingExporter(OTLPSpanExporter()))
    else:
        processor = SimpleSpanProcessor(RedactingExporter(exporter))
    provider = TracerProvider(resource=resource)
    db_provider = TracerProvider(resource=resource, sampler=ParentBased(root=ALWAYS_OFF))
    provider.add_span_processor(processor)
    db_provider.add_span_processor(processor)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    logs.set_trace_ids(_current_ids)
    _active = _Tracing(provider, db_provider)
    return _active


def instrument_app(app: Flask, engine: Engine, settings: Settings) -> None:
    """Trace the app's requests and the statements they run on ``engine`` (no-op when off)."""
    tracing = start(settings)
    if tracing is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(
        app,
        tracer_provider=tracing.provider,
        excluded_urls=EXCLUDED_URLS,
        enable_commenter=False,
    )
    if engine not in tracing.engines:
        tracing.engines.add(engine)
        _trace_engine(engine, tracing.db_provider)


def _trace_engine(engine: Engine, provider: TracerProvider) -> None:
    """The SQLAlchemy instrumentation's engine tracer on ``engine`` only.

    Not ``SQLAlchemyInstrumentor().instrument(engine=...)``: that also wraps
    ``create_async_engine`` (which needs greenlet, not installed) and ``Engine.connect`` (a
    span per connection checkout), and 0.66b1 declares SQLAlchemy < 2.1 although the engine
    events it listens to are the same in 2.1 (tests/api/test_tracing.py checks the spans).
    """
    from opentelemetry.instrumentation.sqlalchemy import __name__ as scope
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    tracer = provider.get_tracer(scope)
    usage = NoOpMeterProvider().get_meter(scope).create_up_down_counter("db.client.connections")
    EngineTracer(tracer, engine, usage, enable_commenter=False)


def instrument_worker(runner: Any, settings: Settings) -> None:
    """Give each of the worker's sends a ``delivery.send`` span (partner key, delivery id,
    outcome, status) around its HTTP spans (no-op when off).

    Wraps the runner's ``_send(partner, payload, *, delivery=...)`` on this instance only, so
    the worker module needs no tracing code.
    """
    tracing = start(settings)
    if tracing is None:
        return
    send = getattr(runner, "_send", None)
    if send is None:
        log.warning("tracing: the worker has no _send to wrap; deliveries get HTTP spans only")
        return
    runner._send = traced_send(send, tracing.provider)


def traced_send(send: Callable[..., Any], provider: TracerProvider) -> Callable[..., Any]:
    """``send`` inside a ``delivery.send`` span named after the partner and the delivery."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = provider.get_tracer("fhir_bridge.worker")

    def traced(partner: Any, payload: bytes, *, delivery: int) -> Any:
        attributes = {"fhir_bridge.partner": partner.key, "fhir_bridge.delivery_id": delivery}
        with tracer.start_as_current_span(
            "delivery.send", kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            result = send(partner, payload, delivery=delivery)
            span.set_attribute("fhir_bridge.delivery_outcome", result.outcome)
            if result.status is not None:
                span.set_attribute("http.response.status_code", result.status)
            if result.outcome != "delivered":
                span.set_status(Status(StatusCode.ERROR))
            return result

    return traced


def shutdown() -> None:
    """Export what is buffered and undo the instrumentation (tests, process exit)."""
    global _active
    if _active is None:
        return
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    RequestsInstrumentor().uninstrument()
    EngineTracer.remove_all_event_listeners()
    logs.set_trace_ids(None)
    _active.provider.shutdown()  # shuts the shared processor down too
    _active = None


def _current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids (hex), for log lines; None outside a span."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def redact_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Only allow-listed attributes, URLs cut to their origin."""
    kept: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in ALLOWED_ATTRIBUTES or key.startswith(OWN_PREFIX):
            kept[key] = value
        elif key in URL_ATTRIBUTES and isinstance(value, str):
            kept[key] = _origin(value)
    return kept


def redact(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` that carries no PHI (see the module docstring)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status

    events = [
        Event(event.name, redact_attributes(event.attributes), event.timestamp)
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=redact_attributes(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingExporter:
    """A span exporter that hands ``redact``-ed copies to another exporter."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> Any:
        """Export the redacted spans."""
        return self.inner.export([redact(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.inner.force_flush(timeout_millis)
