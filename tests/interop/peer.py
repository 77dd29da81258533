"""The Medplum peer (tests/interop/medplum_peer/server.mjs) as a subprocess, and a small client.

``medplum_peer()`` starts ``node server.mjs --port 0`` (the server picks a free port and prints
it), waits until ``/fhir/metadata`` answers and stops the process afterwards. Without Node or
without ``node_modules`` (``make install`` runs ``npm ci`` there) the tests are skipped, except
under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_bridge.mapping.delivery_bundle import identifier_query

PEER_DIR = Path(__file__).resolve().parent / "medplum_peer"
FHIR_JSON = "application/fhir+json"
START_TIMEOUT = 30.0


def _unavailable(reason: str) -> None:
    """Skip locally; fail under CI=true (a CI run must exercise the real peer)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Medplum peer unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"Medplum peer unavailable: {reason}")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _unavailable("`node` is not on PATH (Node.js >= 20 is needed)")
    if not (PEER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        _unavailable(
            f"{PEER_DIR / 'node_modules'} is missing: run `make install` "
            "(npm ci --prefix tests/interop/medplum_peer)"
        )
    assert node is not None
    return node


@dataclass
class MedplumPeer:
    """A running peer: its FHIR base URL and test controls."""

    base: str
    process: subprocess.Popen[str]
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def admin(self) -> str:
        return self.base.removesuffix("/fhir") + "/__admin"

    # -- controls ------------------------------------------------------------------------

    def outage(self, status: int = 503, retry_after: int | None = None, times: int | None = None):
        """Answer every FHIR request (or the next ``times``) with ``status``."""
        body = {"status": status, "retryAfter": retry_after, "times": times}
        self.http.post(f"{self.admin}/outage", json=body, timeout=5).raise_for_status()

    def end_outage(self) -> None:
        self.http.delete(f"{self.admin}/outage", timeout=5).raise_for_status()

    def limit_strict_transactions(self, max_entries: int | None) -> None:
        """Refuse a conditional transaction of more than ``max_entries`` entries, as Medplum's
        server does with 8 (None: no limit, the peer's default)."""
        body = {"maxStrictEntries": max_entries}
        self.http.post(f"{self.admin}/config", json=body, timeout=5).raise_for_status()

    def reset(self) -> None:
        """Forget every resource, the outage, the statistics and the entry limit."""
        self.http.post(f"{self.admin}/reset", timeout=30).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """FHIR requests seen: ``requests``, ``byStatus``, ``outageAnswers``, ``transactions``."""
        resp = self.http.get(f"{self.admin}/stats", timeout=5)
        resp.raise_for_status()
        return resp.json()

    # -- plain FHIR ----------------------------------------------------------------------

    def get(self, path: str, **params: str) -> dict[str, Any]:
        resp = self.http.get(f"{self.base}/{path}", params=params, timeout=30)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:2000])
        return resp.json()

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return self.http.post(
            f"{self.base}/{path}".rstrip("/"),
            json=body,
            headers={"Content-Type": FHIR_JSON, **headers},
            timeout=30,
        )

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        """The resources a FHIR search finds (one page of up to 10,000; the peer pages no more)."""
        bundle = self.get(resource_type, _count="10000", **params)
        assert len(bundle.get("entry", [])) == bundle["total"], "more than one page"
        return [e["resource"] for e in bundle.get("entry", [])]

    def count(self, resource_type: str, system: str, value: str) -> int:
        """How many ``resource_type`` resources carry the identifier (``_summary=count``)."""
        query = identifier_query(system, value)  # FHIR-escaped and URL-encoded as the bridge does
        bundle = self.get(f"{resource_type}?{query}&_summary=count")
        return int(bundle["total"])

    def total(self, resource_type: str) -> int:
        """How many ``resource_type`` resources the peer holds."""
        return int(self.get(resource_type, _summary="count")["total"])

    def history(self, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.get(f"{resource_type}/{resource_id}/_history")["entry"]]


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@contextmanager
def medplum_peer() -> Iterator[MedplumPeer]:
    """Start the peer on a free port; stop it (SIGTERM, then SIGKILL) afterwards."""
    node = _node()
    process = subprocess.Popen(
        [node, "server.mjs", "--port", "0"],
        cwd=PEER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        base = None
        while base is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("Medplum peer did not start:\n" + "".join(output)[-3000:])
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            output.append(line)
            if line.startswith("listening "):
                base = line.split()[1]
        peer = MedplumPeer(base=base, process=process)
        while requests.get(f"{base}/metadata", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("Medplum peer does not answer /fhir/metadata")
            time.sleep(0.1)
        yield peer
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
