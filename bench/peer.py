"""A loopback FHIR peer for the delivery benchmark: accepts transaction Bundles, fast.

``POST /fhir`` with a transaction Bundle answers 200 and a ``transaction-response`` Bundle with
one ``response`` per entry (``201 Created`` for POST, ``200 OK`` otherwise, with a
``location``); anything else is a 400 OperationOutcome. While ``outage`` is on every POST gets
503 (without ``Retry-After``, so the worker's own backoff decides when it comes back).

It is pre-forked: the listening socket is opened here and ``processes`` children (each a
threaded HTTP/1.1 keep-alive server, parsing bodies with orjson) accept on it, so the peer
is not held to one GIL. Counters and the outage switch live in shared memory.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

HOST = "127.0.0.1"
_CTX = mp.get_context("fork")
_OUTCOME_503 = orjson.dumps(
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "diagnostics": "peer outage"}],
    }
)
_OUTCOME_400 = orjson.dumps(
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": "not a transaction"}],
    }
)


@dataclass
class Peer:
    """A running peer: its FHIR base and shared counters (``accepted`` 2xx, ``refused`` 503)."""

    base: str
    accepted: Any  # multiprocessing.Value("q")
    refused: Any
    outage_flag: Any

    @property
    def outage(self) -> bool:
        """True while every POST is answered 503."""
        return bool(self.outage_flag.value)

    @outage.setter
    def outage(self, on: bool) -> None:
        self.outage_flag.value = 1 if on else 0

    def reset(self) -> None:
        """Zero the counters."""
        with self.accepted.get_lock():
            self.accepted.value = 0
        with self.refused.get_lock():
            self.refused.value = 0


def transaction_response(bundle: Any) -> bytes | None:
    """The transaction-response for a transaction Bundle (None when it is not one)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    if bundle.get("type") != "transaction":
        return None
    entries = []
    for entry in bundle.get("entry") or []:
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or "method" not in request:
            return None
        resource = entry.get("resource") or {}
        rtype = resource.get("resourceType", "Resource")
        created = request["method"] == "POST"
        entries.append(
            {
                "response": {
                    "status": "201 Created" if created else "200 OK",
                    "location": f"{rtype}/{resource.get('id') or 'x'}/_history/1",
                }
            }
        )
    return orjson.dumps(
        {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
    )


def _handler(peer: Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connection
        disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on small answers
        wbufsize = 64 * 1024  # headers and body in one write (flushed after each request)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if peer.outage_flag.value:
                with peer.refused.get_lock():
                    peer.refused.value += 1
                self._answer(503, _OUTCOME_503)
                return
            try:
                answer = transaction_response(orjson.loads(raw))
            except orjson.JSONDecodeError:
                answer = None
            if answer is None or self.path.rstrip("/") != "/fhir":
                self._answer(400, _OUTCOME_400)
                return
            with peer.accepted.get_lock():
                peer.accepted.value += 1
            self._answer(200, answer)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _exit(*_: object) -> None:
    raise SystemExit(0)


def _serve(httpd: ThreadingHTTPServer) -> None:
    signal.signal(signal.SIGTERM, _exit)
    with suppress(SystemExit, KeyboardInterrupt):
        httpd.serve_forever(poll_interval=0.5)


@contextmanager
def loopback_peer(processes: int = 2) -> Iterator[Peer]:
    """Start the peer on a free loopback port with ``processes`` accepting processes."""
    peer = Peer(
        base="",
        accepted=_CTX.Value("q", 0),
        refused=_CTX.Value("q", 0),
        outage_flag=_CTX.Value("b", 0, lock=False),
    )
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    httpd = ThreadingHTTPServer((HOST, 0), _handler(peer))
    peer.base = f"http://{HOST}:{httpd.server_port}/fhir"
    children = [_CTX.Process(target=_serve, args=(httpd,), daemon=True) for _ in range(processes)]
    for child in children:
        child.start()
    try:
        yield peer
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(5)
        httpd.server_close()


if __name__ == "__main__":  # a manual check: python -m bench.peer
    import time

    import requests

    with loopback_peer() as p:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": {"resourceType": "Basic"}, "request": {"method": "POST"}}],
        }
        s = requests.Session()
        t0 = time.perf_counter()
        for _ in range(1000):
            s.post(p.base, data=orjson.dumps(bundle)).raise_for_status()
        print(f"{1000 / (time.perf_counter() - t0):.0f} req/s, accepted {p.accepted.value}")
