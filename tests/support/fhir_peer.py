"""A partner FHIR server that receives transaction Bundles: records them, can fail on demand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FhirPeer:
    """State of the peer. ``outage`` answers 503 (with ``retry_after`` when set);
    ``status_override`` answers that status with an OperationOutcome; ``delay`` seconds per POST.
    """

    base: str
    received: list[dict[str, Any]] = field(default_factory=list)
    #: every POST body, whatever it was and however it was answered
    posts: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    outage: bool = False
    retry_after: str | None = None
    status_override: int | None = None
    delay: float = 0.0
    #: POSTs being answered right now
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outcome(self, status: int) -> dict[str, Any]:
        """The OperationOutcome the peer answers a refused Bundle with."""
        return {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": f"peer {status}"}],
        }

    def ids(self) -> list[str]:
        """The first entry's fullUrl of every Bundle received, in order of arrival."""
        with self.lock:
            return [b["entry"][0]["fullUrl"] for b in self.received]


@contextmanager
def fhir_peer() -> Iterator[FhirPeer]:
    """Start the peer on a free local port; its FHIR base is ``peer.base``."""
    state: dict[str, FhirPeer] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            peer = state["peer"]
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if peer.delay:
                with peer.lock:
                    peer.in_flight += 1
                time.sleep(peer.delay)
                with peer.lock:
                    peer.in_flight -= 1
            with peer.lock:
                peer.attempts += 1
                peer.posts.append(raw)
                outage, override, retry_after = peer.outage, peer.status_override, peer.retry_after
            if outage:
                extra = {"Retry-After": retry_after} if retry_after else {}
                self._answer(503, peer.outcome(503), extra)
                return
            if override:
                self._answer(override, peer.outcome(override), {})
                return
            bundle = json.loads(raw)
            if self.path.rstrip("/") != "/fhir" or bundle.get("type") != "transaction":
                self._answer(400, peer.outcome(400), {})
                return
            with peer.lock:
                peer.received.append(bundle)
                peer.headers.append(dict(self.headers))
            response = {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": {"status": "201 Created"}} for _ in bundle["entry"]],
            }
            self._answer(200, response, {})

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["peer"] = FhirPeer(base=f"http://127.0.0.1:{httpd.server_port}/fhir")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["peer"]
    finally:
        httpd.shutdown()
        httpd.server_close()
