"""What authorization and member scoping add to ``Observation?patient=X&code=...`` latency.

One gunicorn bridge (2 workers x 4 threads, as ``serve`` runs it) on the read suite's store,
three kinds of caller interleaved request by request so that drift hits all three alike:

* ``open``: no token (development access: no token check, no scoping), the baseline;
* ``admin``: a clinic admin's bearer token (token check, no scoping);
* ``payer``: a payer's bearer token for the patient's own payer (token check, member scoping
  through the Coverage index, and an AuditEvent written after each response).

Prints the median and p95 per caller, and the payer/open ratio (goal: at most 1.10).

    .venv/bin/python -m bench.auth [--backends sqlite,postgresql] [--scale 10k] [--requests 600]
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import time
from typing import Any

from sqlalchemy import text

from bench import dataset
from bench.databases import BACKENDS, RESULTS_DIR, analyze
from bench.measure import HOST, percentiles
from bench.run import prepare
from bench.server import serve
from fhir_bridge.security.tokens import issue_access_token
from fhir_bridge.services.authorization import utcnow
from fhir_bridge.store.clients import ClientStore
from fhir_bridge.store.db import make_engine, session_factory, write_session

GOAL_RATIO = 1.10
LOINC_PAIN = "http://loinc.org|72514-3"


def _payer_of(i: int) -> str:
    coverage = next(r for r in dataset.patient_resources(i) if r["resourceType"] == "Coverage")
    return coverage["payor"][0]["reference"]


def _token(url: str, port: int, role: str, organization: str | None) -> str:
    engine = make_engine(url)
    try:
        with write_session(session_factory(engine)) as session:
            secret = ClientStore(session).signing_secret(now=utcnow())
    finally:
        engine.dispose()
    base = f"http://{HOST}:{port}"
    return issue_access_token(
        secret,
        issuer=base,
        audience=f"{base}/fhir",
        client_id=f"bench-{role}",
        role=role,
        organization=organization,
        scope="system/*.rs",
        now=utcnow(),
    ).access_token


_AUDIT_VERSIONS = "SELECT pk FROM resource_version WHERE resource_type = 'AuditEvent'"


def purge_audit_events(url: str) -> int:
    """Delete the AuditEvents earlier runs wrote (one per payer request), so every run
    measures the same store; refresh the planner statistics. Returns how many."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for table in ("search_token", "search_reference", "search_date", "search_string"):
                conn.execute(text(f"DELETE FROM {table} WHERE version_pk IN ({_AUDIT_VERSIONS})"))
            conn.execute(
                text(
                    "UPDATE resource SET current_version_pk = 0 WHERE resource_type = 'AuditEvent'"
                )
            )
            conn.execute(text("DELETE FROM resource_version WHERE resource_type = 'AuditEvent'"))
            purged = conn.execute(
                text("DELETE FROM resource WHERE resource_type = 'AuditEvent'")
            ).rowcount
        if purged and engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))  # the deleted rows, out of the way
        else:
            analyze(engine)
    finally:
        engine.dispose()
    return purged


def _one(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - t0) * 1000.0
    if response.status != 200:
        raise RuntimeError(f"{path} -> {response.status}: {body[:300]!r}")
    return elapsed


def measure_backend(backend: str, scale: str, requests: int) -> dict[str, Any]:
    """Interleaved latency of the three callers on one backend."""
    url, stored, _ = prepare(backend, scale)
    purged = purge_audit_events(url)
    if purged:
        print(f"  removed {purged} AuditEvents of earlier runs", flush=True)
    patients = dataset.patients_in(stored)
    rng = random.Random("fhir-bridge-auth-bench")
    targets = [rng.randrange(patients) for _ in range(requests)]
    with serve(url, RESULTS_DIR / f"auth-{backend}-{scale}.log") as server:
        admin = {"Authorization": f"Bearer {_token(url, server.port, 'admin', None)}"}
        conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
        samples: dict[str, list[float]] = {"open": [], "admin": [], "payer": []}
        payer_tokens: dict[str, dict[str, str]] = {}
        for n, i in enumerate(targets):
            org = _payer_of(i)
            if org not in payer_tokens:
                token = _token(url, server.port, "payer", org)
                payer_tokens[org] = {"Authorization": f"Bearer {token}"}
            path = f"/fhir/Observation?patient=Patient/{dataset.patient_id(i)}&code={LOINC_PAIN}"
            callers = [("open", {}), ("admin", admin), ("payer", payer_tokens[org])]
            rng.shuffle(callers)
            for name, headers in callers:
                ms = _one(conn, path, headers)
                if n >= 50:  # the first 50 rounds warm caches and connections
                    samples[name].append(ms)
        conn.close()
    result = {name: percentiles(values) for name, values in samples.items()}
    base = statistics.median(samples["open"])
    return {
        "backend": backend,
        "scale": scale,
        "resources": stored,
        "requests": len(samples["open"]),
        "latency_ms": result,
        "admin_ratio": round(statistics.median(samples["admin"]) / base, 3),
        "payer_ratio": round(statistics.median(samples["payer"]) / base, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Run and print; exit 1 when a backend misses the goal."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--scale", default="10k")
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args(argv)
    failed = False
    print(f"{'backend':<11}{'caller':<8}{'p50 ms':>8}{'p95 ms':>8}  ratio to open (median)")
    for backend in args.backends.split(","):
        r = measure_backend(backend, args.scale, args.requests)
        for name in ("open", "admin", "payer"):
            lat = r["latency_ms"][name]
            ratio = {"open": 1.0, "admin": r["admin_ratio"], "payer": r["payer_ratio"]}[name]
            print(f"{backend:<11}{name:<8}{lat['p50']:>8.2f}{lat['p95']:>8.2f}  {ratio:.3f}")
        verdict = "PASS" if r["payer_ratio"] <= GOAL_RATIO else "FAIL"
        print(
            f"{backend}: authorization + scoping adds {100 * (r['payer_ratio'] - 1):.1f}% "
            f"(goal <= {100 * (GOAL_RATIO - 1):.0f}%): {verdict}",
            flush=True,
        )
        failed |= verdict == "FAIL"
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
