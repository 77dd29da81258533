"""Tracing as deployed: a gunicorn-served bridge and a ``fhir-bridge worker`` process, both with
FHIR_BRIDGE_OTEL=on, export their spans over OTLP/HTTP (the SDK's exporter, batched, configured
by OTEL_* variables only) to a collector, here a local HTTP server decoding the protobuf.

A visit posted to the bridge is one trace (request -> statements) that continues the caller's
``traceparent``; the worker's delivery of it is another (``delivery.send`` -> POST) whose
``traceparent`` reaches the partner; no span carries the patient's MRN or name. Both databases.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.api.test_referrals import act, post, referral
from tests.factories import patient, practitioner, store_all
from tests.interop.test_medplum_delivery import NPI, register
from tests.interop.test_worker_crash import _visit
from tests.support.fhir_peer import fhir_peer
from tests.support.served import served_bridge, start_worker, stop

pytestmark = pytest.mark.interop

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = "00f067aa0ba902b7"
MRN, FAMILY, GIVEN = "P-7301", "Whitfield", "Imogen"
WAIT_S = 60.0


@dataclass
class Span:
    """What the tests read of an exported span."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class Collector:
    base: str
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, found: Any, what: str) -> list[Span]:
        """Spans for which ``found(span)`` holds, once there are any (AssertionError after 60 s)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with self.lock:
                hits = [s for s in self.spans if found(s)]
            if hits:
                return hits
            time.sleep(0.1)
        raise AssertionError(f"no span {what}: {[(s.service, s.name) for s in self.spans]}")


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@contextmanager
def collector() -> Iterator[Collector]:
    """An OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) on a free port."""
    state: dict[str, Collector] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
            spans = []
            for resource_spans in request.resource_spans:
                attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        spans.append(
                            Span(
                                service=attrs.get("service.name", ""),
                                name=s.name,
                                kind=s.kind,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_id=s.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in s.attributes},
                            )
                        )
            with state["c"].lock:
                state["c"].spans.extend(spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["c"] = Collector(base=f"http://127.0.0.1:{httpd.server_port}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["c"]
    finally:
        httpd.shutdown()
        httpd.server_close()


SERVER, CLIENT = 2, 3  # OTLP SpanKind values


def test_served_bridge_and_worker_export_connected_traces(
    client, runtime, database_url, tmp_path: Path
) -> None:
    store_all(
        runtime,
        [
            practitioner("dr-natarajan", NPI, "Natarajan", "Priya"),
            patient("pat-1", MRN, FAMILY, GIVEN),
        ],
    )
    resp = post(
        client, "/fhir/ServiceRequest", referral("SR-0001", subject={"reference": "Patient/pat-1"})
    )
    assert resp.status_code == 201, resp.get_json()
    assert act(client, resp.get_json()["id"], "accept").status_code == 200
    log = tmp_path / "tracing.log"
    otel = {"FHIR_BRIDGE_OTEL": "on", "OTEL_BSP_SCHEDULE_DELAY": "200"}
    with collector() as spans, fhir_peer() as peer:
        otel["OTEL_EXPORTER_OTLP_ENDPOINT"] = spans.base
        with served_bridge(
            database_url, log=log, FHIR_BRIDGE_DEV_OPEN_ACCESS="true", **otel
        ) as base:
            register(runtime, peer.base, ["session.documented"])
            caller = f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"
            answer = requests.post(
                f"{base}/api/v1/sessions",
                data=json.dumps(_visit(MRN, "SR-0001", 0)),
                headers={"Content-Type": "application/json", "traceparent": caller},
                timeout=60,
            )
            assert answer.status_code == 201, answer.text
            (request,) = spans.wait_for(
                lambda s: s.kind == SERVER and s.name == "POST /api/v1/sessions", "request"
            )
        worker = start_worker(
            database_url, log, "--idle-seconds", "0.2", OTEL_SERVICE_NAME="bridge-worker", **otel
        )
        try:
            (delivery,) = spans.wait_for(lambda s: s.name == "delivery.send", "delivery")
            spans.wait_for(lambda s: s.parent_id == delivery.span_id, "under the delivery")
        finally:
            assert stop(worker) == 0, log.read_text()[-3000:]

    # the request continued the caller's trace; its statements are in it
    assert request.service == "fhir-bridge"
    assert (request.trace_id, request.parent_id) == (CALLER_TRACE, CALLER_PARENT)
    in_request = [s for s in spans.spans if s.trace_id == CALLER_TRACE]
    assert any("db.statement" in s.attributes for s in in_request)
    # the delivery: its own trace, sent to the partner as traceparent
    assert delivery.service == "bridge-worker"
    assert delivery.attributes["fhir_bridge.partner"] == "medplum"
    assert isinstance(delivery.attributes["fhir_bridge.delivery_id"], int)
    (post_span,) = [s for s in spans.spans if s.parent_id == delivery.span_id and s.kind == CLIENT]
    (headers,) = peer.headers
    assert headers["traceparent"].split("-")[1:3] == [delivery.trace_id, post_span.span_id]
    # no PHI in anything exported
    exported = json.dumps([[s.name, s.attributes] for s in spans.spans])
    for phi in (MRN, FAMILY, GIVEN):
        assert phi not in exported
