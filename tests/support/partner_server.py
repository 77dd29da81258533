"""A real HTTP server standing in for a partner's FHIR server in integration tests.

It reads resources (``GET [base]/Type/id``) and searches them (``GET [base]/Type?...``) the way
a physician's EHR would for pull mode: ``performer:identifier`` / ``owner:identifier`` (on the
reference's identifier or the referenced resource's), ``code``, ``_lastUpdated`` (ge/gt/le/lt),
``_sort=_lastUpdated``, ``_count`` with ``next`` links (``_offset``), and ``_include`` /
``_include:iterate``. Unknown parameters are ignored, as lenient servers do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit


@dataclass
class PartnerServer:
    """Serves ``resources`` (path -> resource) as application/fhir+json; records requests.

    ``status_override`` answers every request with that status; ``fail_from_offset`` answers
    503 to search pages starting at or after that offset (an outage in the middle of paging);
    ``ignore_filters`` makes searches ignore every criterion but ``_lastUpdated``.
    """

    base: str
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    status_override: int | None = None
    fail_from_offset: int | None = None
    ignore_filters: bool = False

    def put(self, resource: dict[str, Any], last_updated: str | None = None) -> str:
        """Serve ``resource`` at [base]/Type/id (with ``meta.lastUpdated``); its absolute URL."""
        if last_updated is not None:
            resource = {
                **resource,
                "meta": {**resource.get("meta", {}), "lastUpdated": last_updated},
            }
        path = f"{resource['resourceType']}/{resource['id']}"
        self.resources[path] = resource
        return f"{self.base}/{path}"

    def searches(self, resource_type: str) -> list[dict[str, str]]:
        """The query parameters of each search of ``resource_type`` received (first pages)."""
        out = []
        for _, target in self.requests:
            parts = urlsplit(target)
            if parts.path.rstrip("/").endswith(f"/{resource_type}") and parts.query:
                out.append(dict(parse_qsl(parts.query)))
        return out

    # -- search --------------------------------------------------------------------------

    def search(self, resource_type: str, query: str) -> tuple[int, dict[str, Any]]:
        """(status, searchset Bundle) for ``GET [base]/resource_type?query``."""
        params = parse_qsl(query, keep_blank_values=True)
        offset = int(dict(params).get("_offset", "0"))
        if self.fail_from_offset is not None and offset >= self.fail_from_offset:
            return 503, {"resourceType": "OperationOutcome"}
        found = [
            r
            for path, r in self.resources.items()
            if path.startswith(f"{resource_type}/") and self._matches(r, params)
        ]
        if ("_sort", "_lastUpdated") in params:
            found.sort(key=lambda r: (_instant(r["meta"]["lastUpdated"]), r["id"]))
        count = int(dict(params).get("_count", "100"))
        page = found[offset : offset + count]
        entries = [
            {
                "fullUrl": f"{self.base}/{resource_type}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page
        ]
        entries += [
            {"fullUrl": f"{self.base}/{path}", "resource": r, "search": {"mode": "include"}}
            for path, r in self._included(page, params).items()
        ]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": entries,
        }
        if offset + count < len(found):
            rest = [(k, v) for k, v in params if k != "_offset"] + [
                ("_offset", str(offset + count))
            ]
            bundle["link"] = [
                {"relation": "next", "url": f"{self.base}/{resource_type}?{urlencode(rest)}"}
            ]
        return 200, bundle

    def _matches(self, resource: dict[str, Any], params: list[tuple[str, str]]) -> bool:
        for name, value in params:
            if name == "_lastUpdated":
                if not _compare(resource["meta"]["lastUpdated"], value):
                    return False
            elif self.ignore_filters:
                continue
            elif name in ("performer:identifier", "owner:identifier"):
                element = resource.get(name.split(":")[0])
                refs = element if isinstance(element, list) else [element]
                if not any(self._names(ref, value) for ref in refs if isinstance(ref, dict)):
                    return False
            elif name == "code":
                system, _, code = value.partition("|")
                codings = (resource.get("code") or {}).get("coding") or []
                if not any(c.get("system") == system and c.get("code") == code for c in codings):
                    return False
        return True

    def _names(self, ref: dict[str, Any], token: str) -> bool:
        system, _, value = token.partition("|")
        idents = [ref.get("identifier")]
        target = self.resources.get(ref.get("reference") or "")
        if target is not None:
            idents += target.get("identifier") or []
        return any(
            isinstance(i, dict) and i.get("system") == system and i.get("value") == value
            for i in idents
        )

    def _included(
        self, page: list[dict[str, Any]], params: list[tuple[str, str]]
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for names, pool in (("_include",), page), (("_include", "_include:iterate"), None):
            sources = pool if pool is not None else [*page, *out.values()]
            for name, value in params:
                if name not in names:
                    continue
                rtype, _, element = value.partition(":")
                for source in sources:
                    if source.get("resourceType") != rtype:
                        continue
                    node = source.get(element)
                    for ref in node if isinstance(node, list) else [node]:
                        path = ref.get("reference") if isinstance(ref, dict) else None
                        if path in self.resources:
                            out[path] = self.resources[path]
        return out


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _compare(stored: str, criterion: str) -> bool:
    prefix, moment = criterion[:2], _instant(criterion[2:])
    ours = _instant(stored)
    return {
        "ge": ours >= moment,
        "gt": ours > moment,
        "le": ours <= moment,
        "lt": ours < moment,
    }[prefix]


@contextmanager
def partner_server() -> Iterator[PartnerServer]:
    """Start a partner FHIR server on a free local port for the duration of the block."""
    state: dict[str, PartnerServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = state["server"]
            server.requests.append(("GET", self.path))
            server.authorizations.append(self.headers.get("Authorization"))
            parts = urlsplit(self.path)
            path = parts.path.removeprefix("/fhir/")
            if server.status_override:
                status, body = server.status_override, {"resourceType": "OperationOutcome"}
            elif "/" not in path.strip("/"):
                status, body = server.search(path.strip("/"), parts.query)
            else:
                resource = server.resources.get(path)
                status = 200 if resource else 404
                body = resource if resource else {"resourceType": "OperationOutcome"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
