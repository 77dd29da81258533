"""Scale-out benchmark: ``python -m bench.scale_out [--sessions 400] [--clients 8]``.

PostgreSQL (database ``test`` on 127.0.0.1:5432, schema ``bench_scale_out`` dropped and
recreated per topology). Each topology serves the bridge as deployed (``gunicorn`` with
``fhir_bridge/gunicorn_conf.py``, 2 processes a node, development mode: no tokens) and runs
``fhir-bridge worker`` processes; a loopback partner (``tests/support/fhir_peer``) takes the
payers' Bundles and records them. ``--clients`` threads post ``--sessions`` synthetic visits
(``bench.session_records``), spread over the nodes; visits whose patient has coverage go to
the payer partner (4 in 5).

Per topology it prints sessions/s (posting) and deliveries/s (every expected Bundle at the peer,
from the first post), and checks exactly once at the peer (each visit's Procedure identifier
received once). Topologies: 1 node + 1 worker, and 2 nodes + 2 workers. The numbers are from a
2-core machine shared with other work: the nodes, the workers, the peer, PostgreSQL and the
clients all compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy import func, select, text

from bench.databases import RESULTS_DIR
from bench.session_records import PAYERS, record
from fhir_bridge.services.runtime import build_runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import make_engine, read_session, write_session
from fhir_bridge.store.migrate import upgrade
from fhir_bridge.store.models import Delivery
from fhir_bridge.store.partners import PartnerStore
from tests.support.fhir_peer import FhirPeer, fhir_peer
from tests.support.served import served_bridge, start_worker, stop

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "bench_scale_out"
PAYER_ID_SYSTEM = Settings().payer_id_system
TOPOLOGIES = ((1, 1), (2, 2))
DEADLINE_S = 600.0


def fresh_schema() -> str:
    """An empty, migrated schema; its URL."""
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
    finally:
        admin.dispose()
    url = f"{PG_URL}?options={quote(f'-csearch_path={SCHEMA}')}"
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def add_payers(url: str, base: str) -> None:
    """One payer partner for every payer id the synthetic records use (auth none)."""
    runtime = build_runtime(Settings(database_url=url))
    try:
        with write_session(runtime.sessions) as session:
            PartnerStore(session).add(
                key="payers",
                name="Loopback payers",
                kind="payer",
                base_url=base,
                events=["session.documented"],
                identifiers=[{"system": PAYER_ID_SYSTEM, "value": p} for p in PAYERS],
                auth_kind="none",
                auth={},
                now=datetime.now(UTC).replace(tzinfo=None),
            )
    finally:
        runtime.dispose()


def delivered(url: str) -> int:
    runtime = build_runtime(Settings(database_url=url))
    try:
        with read_session(runtime.sessions) as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.status == "delivered")
                )
            )
    finally:
        runtime.dispose()


def at_peer(peer: FhirPeer) -> Counter[str]:
    """Bundles the peer took per visit (its Procedure's session identifier)."""
    with peer.lock:
        bundles = list(peer.received)
    return Counter(
        ident["value"]
        for bundle in bundles
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Procedure"
        for ident in entry["resource"].get("identifier", [])
        if ident.get("value", "").endswith("/procedure")
    )


def run(nodes: int, workers: int, sessions: int, clients: int) -> dict[str, Any]:
    """One topology: post the visits, wait for every Bundle at the peer; the figures."""
    url = fresh_schema()
    records = [record(n, prefix="SCALE") for n in range(sessions)]
    expected = sum(1 for r in records if r["patient"].get("coverage"))
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    with ExitStack() as stack:
        peer = stack.enter_context(fhir_peer())
        add_payers(url, peer.base)
        env = {"FHIR_BRIDGE_DEV_OPEN_ACCESS": "true"}
        bases = [
            stack.enter_context(served_bridge(url, log=logs / f"node{i}.log", **env))
            for i in range(nodes)
        ]
        procs = [
            start_worker(url, logs / f"worker{i}.log", "--idle-seconds", "0.2")
            for i in range(workers)
        ]
        try:
            http = requests.Session()

            def post(n: int) -> int:
                body = json.dumps(records[n])
                return http.post(
                    f"{bases[n % nodes]}/api/v1/sessions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                ).status_code

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                statuses = Counter(pool.map(post, range(sessions)))
            posted = time.monotonic() - started
            while sum(at_peer(peer).values()) < expected or delivered(url) < expected:
                if time.monotonic() - started > DEADLINE_S:
                    raise SystemExit(f"not delivered within {DEADLINE_S} s (logs: {logs})")
                time.sleep(0.1)
            done = time.monotonic() - started
        finally:
            for proc in procs:
                stop(proc)
    received = at_peer(peer)
    return {
        "nodes": nodes,
        "workers": workers,
        "sessions": sessions,
        "statuses": dict(statuses),
        "sessions_per_s": round(sessions / posted, 1),
        "deliveries": expected,
        "deliveries_per_s": round(expected / done, 1),
        "all_delivered_s": round(done, 1),
        "exactly_once": len(received) == expected and set(received.values()) == {1},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    results = [run(n, w, args.sessions, args.clients) for n, w in TOPOLOGIES]
    print(f"{'topology':<22}{'sessions/s':>12}{'deliveries/s':>14}{'exactly once':>14}")
    for r in results:
        label = f"{r['nodes']} node(s), {r['workers']} worker(s)"
        once = "yes" if r["exactly_once"] else "NO"
        print(f"{label:<22}{r['sessions_per_s']:>12}{r['deliveries_per_s']:>14}{once:>14}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "scale-out-latest.json").write_text(
        json.dumps(
            {"at": datetime.now(UTC).isoformat(), "machine": platform.node(), "runs": results},
            indent=2,
        )
    )
    return 0 if all(r["exactly_once"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
