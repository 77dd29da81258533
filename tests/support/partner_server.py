"""A real HTTP server standing in for a partner's FHIR server in integration tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class PartnerServer:
    """Serves ``resources`` (path -> resource) as application/fhir+json; records requests."""

    base: str
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    status_override: int | None = None

    def put(self, resource: dict[str, Any]) -> str:
        """Serve ``resource`` at [base]/Type/id; its absolute URL."""
        path = f"{resource['resourceType']}/{resource['id']}"
        self.resources[path] = resource
        return f"{self.base}/{path}"


@contextmanager
def partner_server() -> Iterator[PartnerServer]:
    """Start a partner FHIR server on a free local port for the duration of the block."""
    state: dict[str, PartnerServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = state["server"]
            server.requests.append(("GET", self.path))
            path = self.path.removeprefix("/fhir/")
            resource = server.resources.get(path)
            status = server.status_override or (200 if resource else 404)
            body = json.dumps(resource if status == 200 else {"resourceType": "OperationOutcome"})
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["server"] = PartnerServer(base=f"http://127.0.0.1:{httpd.server_port}/fhir")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
