"""HTTP load on ``POST /api/v1/sessions``: N client threads for a fixed duration.

Each thread keeps one ``http.client`` connection (HTTP/1.1 keep-alive, which ``serve``'s threaded
workers keep for 5 s; http.client reconnects when closed) and posts bodies handed out by a
shared, thread-safe source: fresh records (``session_records.body(n)`` with a global counter)
or a replay of bodies already stored. Only 2xx answers count as sessions; everything else is
an error, and the first error's status and body are kept. The client's own CPU time
(``os.times()`` of this process) and the whole machine's busy share (``/proc/stat``) are
recorded, because the clients run on the same 2 cores as gunicorn and the database.
"""

from __future__ import annotations

import http.client
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.measure import connection, percentiles
from bench.session_records import body

PATH = "/api/v1/sessions"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class FreshBodies:
    """Distinct records: session ``n`` for n = start, start+1, ... (thread-safe)."""

    def __init__(self, start: int = 0, **record_kwargs: Any) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()
        self._kwargs = record_kwargs

    def __call__(self) -> bytes:
        with self._lock:
            n = next(self._counter)
        return body(n, **self._kwargs)


class ReplayBodies:
    """Bodies already stored, over and over in order (thread-safe)."""

    def __init__(self, bodies: list[bytes]) -> None:
        if not bodies:
            raise ValueError("nothing to replay: no session was stored")
        self._cycle = itertools.cycle(bodies)
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            return next(self._cycle)


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat ((0, 0) if unavailable)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


@dataclass
class PostRun:
    """Result of one fixed-duration run of concurrent posting clients."""

    clients: int
    seconds: float = 0.0
    ok: int = 0
    errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)
    stored: list[bytes] = field(default_factory=list)
    client_cpu_s: float = 0.0
    machine_busy: float = 0.0

    @property
    def rps(self) -> float:
        """Sessions (2xx answers) per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures."""
        lat = percentiles(self.latencies) if len(self.latencies) > 1 else {}
        cpus = os.cpu_count() or 1
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "sessions_ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "first_error": self.first_error,
            "sessions_per_s": round(self.rps, 1),
            "latency_ms": {k: round(v, 2) for k, v in lat.items()},
            "client_cpu_s": round(self.client_cpu_s, 2),
            "client_cpu_share_of_machine": round(self.client_cpu_s / self.seconds / cpus, 3)
            if self.seconds
            else None,
            "machine_busy_share": round(self.machine_busy, 3),
        }


def _post(conn: http.client.HTTPConnection, payload: bytes) -> tuple[int, bytes]:
    try:
        conn.request("POST", PATH, body=payload, headers=HEADERS)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        raise


def post_for(
    port: int,
    bodies: Callable[[], bytes],
    clients: int = 8,
    duration_s: float = 20.0,
    *,
    keep: bool = False,
) -> PostRun:
    """``clients`` threads post ``bodies()`` for ``duration_s`` s; ``keep`` the stored bodies."""
    result = PostRun(clients)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker() -> None:
        conn = connection(port)
        ok = errors = 0
        statuses: Counter[int] = Counter()
        first: str | None = None
        lats: list[float] = []
        stored: list[bytes] = []
        clock = time.perf_counter
        start.wait()
        while clock() < deadline[0]:
            payload = bodies()
            t0 = clock()
            try:
                status, answer = _post(conn, payload)
            except (OSError, http.client.HTTPException) as exc:
                status, answer = 0, repr(exc).encode()
            elapsed = (clock() - t0) * 1000.0
            statuses[status] += 1
            if 200 <= status < 300:
                ok += 1
                lats.append(elapsed)
                if keep:
                    stored.append(payload)
            else:
                errors += 1
                first = first or f"HTTP {status}: {answer[:800].decode(errors='replace')}"
        conn.close()
        with lock:
            result.ok += ok
            result.errors += errors
            result.statuses.update(statuses)
            result.latencies.extend(lats)
            result.stored.extend(stored)
            result.first_error = result.first_error or first

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    cpu0, (busy0, total0) = os.times(), cpu_busy()
    t_start = time.perf_counter()
    deadline[0] = t_start + duration_s
    start.wait()
    for t in threads:
        t.join(duration_s + 120)
    result.seconds = time.perf_counter() - t_start
    cpu1, (busy1, total1) = os.times(), cpu_busy()
    result.client_cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    result.machine_busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    return result
