"""The measured requests and the two ways of timing them: one sequential client, N concurrent ones.

Targets are drawn with a seeded RNG from the patients a store of that size holds, so every run
at one scale asks for the same things. The client keeps connections alive where the server
allows it (``serve``'s threaded workers keep it alive for 5 s; http.client reconnects when not).
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from bench import dataset

HOST = "127.0.0.1"
GOAL_QUERY = "obs_patient_code"
HEADERS = {"Accept": "application/fhir+json"}
PAIN = f"{dataset.LOINC}|{dataset.PAIN_CODE}"


def _qs(params: list[tuple[str, str]]) -> str:
    return urlencode(params, quote_via=quote, safe="/:")


def _patient(i: int) -> str:
    return f"Patient/{dataset.patient_id(i)}"


#: name -> (description, path builder from a patient index)
QUERIES: dict[str, tuple[str, Callable[[int], str]]] = {
    "read_patient": ("GET Patient/{id}", lambda i: f"/fhir/Patient/{dataset.patient_id(i)}"),
    GOAL_QUERY: (
        "Observation?patient=X&code=loinc|72514-3",
        lambda i: "/fhir/Observation?" + _qs([("patient", _patient(i)), ("code", PAIN)]),
    ),
    "obs_sorted_count10": (
        "Observation?patient=X&code=..&_sort=-date&_count=10",
        lambda i: (
            "/fhir/Observation?"
            + _qs([("patient", _patient(i)), ("code", PAIN), ("_sort", "-date"), ("_count", "10")])
        ),
    ),
    "proc_patient_date": (
        "Procedure?patient=X&date=ge2026-01-01",
        lambda i: "/fhir/Procedure?" + _qs([("patient", _patient(i)), ("date", "ge2026-01-01")]),
    ),
    "patient_name_prefix": (
        "Patient?name=<3-letter prefix>",
        lambda i: "/fhir/Patient?" + _qs([("name", dataset.patient_name(i)[0][:3])]),
    ),
    "sr_include_requester": (
        "ServiceRequest?patient=X&_include=ServiceRequest:requester",
        lambda i: (
            "/fhir/ServiceRequest?"
            + _qs([("patient", _patient(i)), ("_include", "ServiceRequest:requester")])
        ),
    ),
}


def targets(query: str, patients: int, n: int, seed: str) -> list[str]:
    """``n`` request paths for ``query`` over random (seeded) patients."""
    rng = random.Random(f"{seed}:{query}")
    build = QUERIES[query][1]
    return [build(rng.randrange(patients)) for _ in range(n)]


class RequestFailed(RuntimeError):
    """A benchmark request did not answer 200."""


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    """One GET on a (re)connecting connection: status and body."""
    try:
        conn.request("GET", path, headers=HEADERS)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        raise


def connection(port: int) -> http.client.HTTPConnection:
    """A loopback connection to the server."""
    return http.client.HTTPConnection(HOST, port, timeout=60)


def entries(body: bytes) -> int:
    """Entries of a searchset Bundle (1 for a plain resource)."""
    doc = json.loads(body)
    return len(doc.get("entry", [])) if doc.get("resourceType") == "Bundle" else 1


def sample_entries(port: int, paths: list[str]) -> float:
    """Mean entries per response over ``paths`` (checks the queries find something)."""
    conn = connection(port)
    counts = []
    for path in paths:
        status, body = get(conn, path)
        if status != 200:
            raise RequestFailed(f"{path} -> {status}: {body[:500]!r}")
        counts.append(entries(body))
    conn.close()
    return statistics.fmean(counts)


def sequential(port: int, paths: list[str]) -> list[float]:
    """Latency in milliseconds of each path, one request at a time; any non-200 raises."""
    conn = connection(port)
    out = []
    clock = time.perf_counter
    for path in paths:
        t0 = clock()
        status, body = get(conn, path)
        out.append((clock() - t0) * 1000.0)
        if status != 200:
            raise RequestFailed(f"{path} -> {status}: {body[:500]!r}")
    conn.close()
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 (inclusive method) and the mean of latency samples in ms."""
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "mean": statistics.fmean(samples)}


@dataclass
class Throughput:
    """Result of a fixed-duration run of concurrent clients."""

    clients: int
    seconds: float
    ok: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, object]:
        """JSON-ready figures."""
        lat = percentiles(self.latencies) if len(self.latencies) > 1 else {}
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "requests_ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "rps": round(self.rps, 1),
            "latency_under_load_ms": {k: round(v, 2) for k, v in lat.items()},
        }


def concurrent(
    port: int, paths: list[str], clients: int = 8, duration_s: float = 10.0
) -> Throughput:
    """``clients`` threads cycle through ``paths`` for ``duration_s`` seconds."""
    result = Throughput(clients, duration_s)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(offset: int) -> None:
        conn = connection(port)
        ok = errors = 0
        first: str | None = None
        lats: list[float] = []
        clock = time.perf_counter
        k = offset
        start.wait()
        while (t0 := clock()) < deadline[0]:
            path = paths[k % len(paths)]
            k += 1
            try:
                status, _ = get(conn, path)
            except (OSError, http.client.HTTPException) as exc:
                status, first = 0, first or f"{path}: {exc!r}"
            if status == 200:
                ok += 1
                lats.append((clock() - t0) * 1000.0)
            else:
                errors += 1
                first = first or f"{path} -> {status}"
        conn.close()
        with lock:
            result.ok += ok
            result.errors += errors
            result.latencies.extend(lats)
            result.first_error = result.first_error or first

    step = max(1, len(paths) // clients)
    threads = [
        threading.Thread(target=worker, args=(i * step,), daemon=True) for i in range(clients)
    ]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    deadline[0] = t_start + duration_s
    start.wait()
    for t in threads:
        t.join(duration_s + 120)
    result.seconds = time.perf_counter() - t_start
    return result
