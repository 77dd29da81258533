"""OpenTelemetry tracing (FHIR_BRIDGE_OTEL): a request's spans reach the store, a delivery's
reach the partner with a W3C ``traceparent``, log lines carry the ids; nothing of it when off.

Spans are captured with the SDK's in-memory exporter behind the bridge's redaction; the partner
is a real HTTP server (tests/support/fhir_peer.py), on both databases.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fhir_bridge import tracing
from fhir_bridge.app import create_app
from fhir_bridge.logs import RequestIdFilter, formatter
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.settings import Settings, SettingsError
from tests.api.test_worker import Clock, _deliveries, _partner, _worker
from tests.factories import patient, store_all
from tests.support.fhir_peer import FhirPeer, fhir_peer

#: W3C Trace Context: version 00, trace id, parent (span) id, flags (sampled: bit 0)
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
MRN, FAMILY, GIVEN = "MRN-778812", "Okonkwo", "Adaeze"


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, exporting to memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    assert tracing.start(replace(settings, otel=True), exporter=exporter) is not None
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.fixture
def peer() -> Iterator[FhirPeer]:
    with fhir_peer() as p:
        yield p


def _access_lines(app, path: str, **kwargs) -> list[dict]:
    """GET ``path`` and return the JSON access log lines it wrote (as in production)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(json=True))
    access = logging.getLogger("fhir_bridge.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        resp = app.test_client().get(path, **kwargs)
        assert resp.status_code == 200, resp.get_data(as_text=True)
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_request_and_its_statements_are_one_trace_without_phi(
    runtime: Runtime, settings: Settings, spans: InMemorySpanExporter
) -> None:
    store_all(runtime, [patient("p1", MRN, FAMILY, GIVEN)])
    app = create_app(replace(settings, otel=True), runtime=runtime)
    assert app.test_client().get("/healthz").status_code == 200  # probes are not traced
    lines = _access_lines(app, f"/fhir/Patient?identifier={MRN}")

    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind == SpanKind.SERVER]
    assert server.name == "GET /fhir/<resource_type>"
    assert server.attributes["http.route"] == "/fhir/<resource_type>"
    assert server.attributes["http.status_code"] == 200
    statements = [s for s in finished if s.attributes.get("db.statement")]
    assert statements, [s.name for s in finished]
    trace_id = server.context.trace_id
    by_id = {s.context.span_id: s for s in finished}
    for statement in statements:
        assert statement.context.trace_id == trace_id
        parent = statement.parent
        while parent is not None and parent.span_id != server.context.span_id:
            parent = by_id[parent.span_id].parent
        assert parent is not None, f"{statement.name} is not under the request's span"
    # the search value, the patient's names: in no span name, attribute or event
    exported = json.dumps(
        [[s.name, dict(s.attributes), [dict(e.attributes) for e in s.events]] for s in finished]
    )
    for phi in (MRN, FAMILY, GIVEN):
        assert phi not in exported
    assert any(
        re.search(r"\?|%\(\w+\)s|%s", s.attributes["db.statement"]) for s in statements
    )  # the statements' placeholders, not the values
    # the access log line of that request names the request's trace and span
    (line,) = [ln for ln in lines if ln["message"] == "request"]
    assert line["trace_id"] == f"{trace_id:032x}"
    assert line["span_id"] == f"{server.context.span_id:016x}"


def test_a_delivery_sends_traceparent_of_its_span(
    runtime: Runtime, settings: Settings, spans: InMemorySpanExporter, peer: FhirPeer
) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    worker = _worker(runtime, Clock())
    tracing.instrument_worker(worker, replace(settings, otel=True))
    assert worker.run_once() == 1

    finished = spans.get_finished_spans()
    (delivery,) = [s for s in finished if s.name == "delivery.send"]
    assert delivery.attributes["fhir_bridge.partner"] == "p1"
    assert delivery.attributes["fhir_bridge.delivery_id"] == pk
    assert delivery.attributes["fhir_bridge.delivery_outcome"] == "delivered"
    (post,) = [s for s in finished if s.kind == SpanKind.CLIENT and s.name == "POST"]
    assert post.parent is not None
    assert post.parent.span_id == delivery.context.span_id
    assert post.attributes["http.url"] == peer.base.removesuffix("/fhir")  # origin only
    (headers,) = peer.headers
    sent = TRACEPARENT.match(headers["traceparent"])
    assert sent is not None, headers["traceparent"]
    assert sent.group(1) == f"{delivery.context.trace_id:032x}"
    assert sent.group(2) == f"{post.context.span_id:016x}"
    assert int(sent.group(3), 16) & 1  # sampled
    # the worker's own queue statements, outside any delivery, start no traces
    assert not [s for s in finished if s.attributes.get("db.statement")]


def test_off_by_default_no_traceparent_and_no_trace_ids(
    runtime: Runtime, settings: Settings, peer: FhirPeer
) -> None:
    assert settings.otel is False
    assert tracing.start(settings) is None
    (_pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    worker = _worker(runtime, Clock())
    tracing.instrument_worker(worker, settings)
    assert worker.run_once() == 1
    (headers,) = peer.headers
    assert "traceparent" not in {k.lower() for k in headers}

    store_all(runtime, [patient("p1", MRN, FAMILY, GIVEN)])
    app = create_app(settings, runtime=runtime)
    (line,) = [ln for ln in _access_lines(app, "/fhir/Patient/p1") if ln["message"] == "request"]
    assert "trace_id" not in line
    assert "span_id" not in line


def test_setting_is_strict() -> None:
    assert Settings.from_env({"FHIR_BRIDGE_OTEL": "on"}).otel is True
    assert Settings.from_env({"FHIR_BRIDGE_OTEL": "off"}).otel is False
    with pytest.raises(ValueError, match="FHIR_BRIDGE_OTEL: invalid boolean"):
        Settings.from_env({"FHIR_BRIDGE_OTEL": "enabled"})


def test_on_without_the_packages_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(SettingsError, match=r"pip install 'fhir-bridge\[otel\]'"):
        tracing.start(Settings(otel=True))
