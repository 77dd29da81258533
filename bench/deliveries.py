"""Delivery benchmark: ``python -m bench.deliveries [--backends sqlite,postgresql] [--quick]``.

A loopback peer (``bench.peer``: pre-forked, threaded, keep-alive) accepts transaction Bundles.
Per backend, on a fresh store (SQLite ``bench/data/deliveries-sqlite.db``; PostgreSQL database
``test`` on 127.0.0.1:5432, schema ``bench_deliveries`` dropped and recreated), ``--sessions``
session records are stored through the session service (as ``POST /api/v1/sessions`` does) and
one physician partner points at the peer. Then, each ``--repeats`` times (medians reported):

(a) **plain**: the peer's rate from a plain client loop: ``requests.Session`` POSTing the same
    Bundles the bridge sent (read back from the delivery rows), with 1 and 4 concurrent client
    processes;
(b) **bridge**: the ``--sessions`` deliveries are enqueued (pre-routed: one pending row per
    session.documented event, no payload yet) and ``fhir-bridge worker``'s loop
    (``Worker.run_forever``, configured from the default settings, ``worker_idle_seconds``
    0.2) runs in 1 process, and on PostgreSQL also in 4 processes; the time from start until
    every row is delivered gives deliveries/s, compared with the plain rate at the same
    concurrency (goal: >= 90%);
(c) **drain**: the peer goes down (503), ``--backlog`` deliveries are enqueued (copies of the
    session events, so spread over the sessions' patients), the workers run against the outage
    for ``--outage`` seconds (backing off), the peer comes back, and the time until the queue is
    empty is measured.

``--peer medplum`` runs the same suite against the interop tests' Medplum peer
(``bench.medplum``: Medplum's FHIR logic in one Node process, which really processes each
transaction) instead: the rate a real partner's processing allows, and whether the bridge keeps
up with it. Suggested sizes: ``--sessions 1000 --backlog 2000``.

Workers log as in production (JSON lines at INFO) into ``bench/results/deliveries-worker.log``.
Prints a table and writes ``bench/results/deliveries-latest.json``; exits 1 when a bridge/plain
ratio misses the goal. ``--quick`` (500 sessions, backlog 500, 1 repeat) is for development.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy import delete, func, insert, select, text, update

from bench.databases import BACKENDS, DATA_DIR, RESULTS_DIR
from bench.peer import _CTX, Peer, loopback_peer
from bench.session_records import body as session_body
from fhir_bridge.services.runtime import Runtime, build_runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import make_engine, write_session
from fhir_bridge.store.migrate import upgrade
from fhir_bridge.store.models import Delivery, DeliveryAttempt, OutboxCursor, OutboxEvent
from fhir_bridge.store.partners import PartnerStore

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_SCHEMA = "bench_deliveries"
GOAL_RATIO = 0.90
FHIR_JSON = "application/fhir+json"
T0 = datetime(2026, 12, 1, 9, 0, 0)
WORKER_LOG = RESULTS_DIR / "deliveries-worker.log"
MAX_RUN_S = 900.0


def utcnow() -> datetime:
    """Naive UTC, the store's convention."""
    return datetime.now(UTC).replace(tzinfo=None)


# -- the store ----------------------------------------------------------------------------------


def fresh_database(backend: str) -> str:
    """An empty, migrated store for ``backend``; its URL."""
    if backend == "sqlite":
        path = DATA_DIR / "deliveries-sqlite.db"
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-writer.lock"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    elif backend == "postgresql":
        admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
                conn.execute(text(f'CREATE SCHEMA "{PG_SCHEMA}"'))
        finally:
            admin.dispose()
        url = f"{PG_URL}?options={quote(f'-csearch_path={PG_SCHEMA}')}"
    else:
        raise ValueError(f"unknown backend {backend!r}")
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def bench_settings(url: str) -> Settings:
    """The worker's settings: the defaults, a short idle pause, production-style logging."""
    return Settings(database_url=url, worker_idle_seconds=0.2, log_json=True)


def seed_sessions(runtime: Runtime, count: int) -> list[int]:
    """Store ``count`` synthetic session records; the pks of their session.documented events."""
    from fhir_bridge.mapping.tables import load_tables
    from fhir_bridge.records.vocabulary import Vocabulary
    from fhir_bridge.services.sessions import submit_session

    tables = load_tables()
    vocabulary = Vocabulary.from_tables(tables)
    started = time.perf_counter()
    for n in range(count):
        submit_session(
            runtime,
            tables,
            vocabulary,
            body=session_body(n, prefix="DLV"),
            request_id=None,
            content_type="application/json",
        )
    print(f"  stored {count} sessions in {time.perf_counter() - started:.1f} s", flush=True)
    with write_session(runtime.sessions) as session:
        events = documented_events(session)
        _park_router(session)
    return events


def documented_events(session: Any) -> list[int]:
    """The pks of every session.documented outbox event, oldest first."""
    return list(
        session.execute(
            select(OutboxEvent.pk)
            .where(OutboxEvent.event_type == "session.documented")
            .order_by(OutboxEvent.pk)
        ).scalars()
    )


def _park_router(session: Any) -> None:
    """Move the router's cursor past every outbox event: the deliveries are pre-routed, and
    the worker's per-cycle routing then finds nothing (as in a steady state)."""
    last = session.execute(select(func.max(OutboxEvent.pk))).scalar_one() or 0
    if session.get(OutboxCursor, "router") is None:
        session.add(OutboxCursor(name="router", last_pk=last))
    else:
        session.execute(
            update(OutboxCursor).where(OutboxCursor.name == "router").values(last_pk=last)
        )


def add_partner(runtime: Runtime, base: str) -> int:
    """The physician partner the deliveries go to (auth none)."""
    with write_session(runtime.sessions) as session:
        return (
            PartnerStore(session)
            .add(
                key="loopback",
                name="Loopback peer",
                kind="physician",
                base_url=base,
                events=["session.documented"],
                identifiers=[],
                auth_kind="none",
                auth={},
                now=T0,
            )
            .pk
        )


def enqueue(runtime: Runtime, partner_pk: int, events: list[int], count: int) -> None:
    """Replace every delivery by ``count`` pending ones, oldest first: one per event in
    ``events`` while they last, then for copies of those events (new outbox rows)."""
    now = utcnow()
    with write_session(runtime.sessions) as session:
        session.execute(delete(DeliveryAttempt))  # the history refers to its delivery
        session.execute(delete(Delivery))
        chosen = events[:count]
        if count > len(events):
            originals = {
                e.pk: e
                for e in session.execute(
                    select(OutboxEvent).where(OutboxEvent.pk.in_(events))
                ).scalars()
            }
            copies = [originals[events[i % len(events)]] for i in range(count - len(events))]
            new = session.execute(
                insert(OutboxEvent).returning(OutboxEvent.pk, sort_by_parameter_order=True),
                [
                    {
                        "created_at": now,
                        "event_type": e.event_type,
                        "resource_type": e.resource_type,
                        "resource_id": e.resource_id,
                        "version_id": e.version_id,
                        "patient_id": e.patient_id,
                        "detail": e.detail,
                        # a copy repeats its event's fact: marked so, as the unique index wants
                        "duplicate_of": e.pk,
                    }
                    for e in copies
                ],
            )
            chosen = chosen + list(new.scalars())
            _park_router(session)
        patients = dict(
            session.execute(
                select(OutboxEvent.pk, OutboxEvent.patient_id).where(OutboxEvent.pk.in_(chosen))
            ).all()
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "partner_pk": partner_pk,
                    "outbox_pk": pk,
                    "event_type": "session.documented",
                    "patient_id": patients[pk],
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for pk in chosen
            ],
        )
    # fresh statistics, as autovacuum would have them (see "Caveats" in bench/README.md)
    with runtime.engine.connect() as conn:
        conn.execute(text("ANALYZE delivery"))
        conn.commit()


def counts(runtime: Runtime) -> dict[str, int]:
    """Deliveries by status."""
    with write_session(runtime.sessions) as session:
        return dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )


def payloads(runtime: Runtime) -> list[bytes]:
    """The Bundles the deliveries sent, in row order."""
    with write_session(runtime.sessions) as session:
        return [
            p
            for p in session.execute(select(Delivery.payload).order_by(Delivery.pk)).scalars()
            if p is not None
        ]


# -- the bridge's workers --------------------------------------------------------------------------


def _worker_main(url: str, name: str, go: Any, stop: Any) -> None:
    """One worker process: the CLI worker's loop with the benchmark's settings."""
    from fhir_bridge.logs import configure_logging
    from fhir_bridge.outbox.pipeline import make_worker
    from fhir_bridge.outbox.worker import WorkerConfig

    log = os.open(WORKER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    settings = bench_settings(url)
    configure_logging(settings.log_level, json=settings.log_json)
    runtime = build_runtime(settings)
    config = WorkerConfig.from_settings(settings, worker_id=name)
    worker = make_worker(runtime, config, clock=utcnow, sleep=stop.wait)
    go.wait()
    try:
        worker.run_forever(stop)
    finally:
        runtime.dispose()


@dataclass
class Workers:
    """Worker processes started and waiting for ``go``."""

    processes: list[Any]
    go: Any
    stop: Any

    def start(self) -> float:
        """Let them run; the start time."""
        self.go.set()
        return time.perf_counter()

    def finish(self) -> None:
        """Stop them (after their current cycle) and wait."""
        self.stop.set()
        for p in self.processes:
            p.join(60)
            if p.is_alive():
                p.kill()


def spawn_workers(url: str, count: int) -> Workers:
    """``count`` worker processes, set up (imports, engine) before the clock starts."""
    go, stop = _CTX.Event(), _CTX.Event()
    processes = [
        _CTX.Process(target=_worker_main, args=(url, f"bench-{i}", go, stop), daemon=True)
        for i in range(count)
    ]
    for p in processes:
        p.start()
    time.sleep(1.0)  # let them import and connect
    return Workers(processes, go, stop)


def wait_delivered(runtime: Runtime, peer: Peer, expected: int, started: float) -> float:
    """Seconds from ``started`` until the peer accepted ``expected`` Bundles and the store shows
    no pending delivery."""
    deadline = started + MAX_RUN_S
    poll = getattr(peer, "poll_seconds", 0.005)
    while peer.accepted.value < expected:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {peer.accepted.value} of {expected} delivered")
        time.sleep(poll)
    while counts(runtime).get("pending", 0):
        if time.perf_counter() > deadline:
            raise TimeoutError("deliveries still pending")
        time.sleep(0.02)
    return time.perf_counter() - started


def bridge_run(
    runtime: Runtime, peer: Peer, partner_pk: int, events: list[int], workers: int
) -> dict[str, Any]:
    """(b): deliver one delivery per event with ``workers`` processes."""
    enqueue(runtime, partner_pk, events, len(events))
    peer.reset()
    runtime.engine.dispose()  # no pooled connection crosses the fork
    pool = spawn_workers(runtime.settings.database_url, workers)
    try:
        seconds = wait_delivered(runtime, peer, len(events), pool.start())
    finally:
        pool.finish()
    return _checked(runtime, peer, len(events), seconds)


def drain_run(
    runtime: Runtime,
    peer: Peer,
    partner_pk: int,
    events: list[int],
    backlog: int,
    workers: int,
    outage_s: float,
) -> dict[str, Any]:
    """(c): outage on, enqueue ``backlog``, run ``outage_s`` against it, outage off, drain."""
    peer.reset()
    peer.outage = True
    enqueue(runtime, partner_pk, events, backlog)
    runtime.engine.dispose()
    pool = spawn_workers(runtime.settings.database_url, workers)
    try:
        pool.start()
        time.sleep(outage_s)
        refused = peer.refused.value
        peer.outage = False
        seconds = wait_delivered(runtime, peer, backlog, time.perf_counter())
    finally:
        pool.finish()
        peer.outage = False
    result = _checked(runtime, peer, backlog, seconds)
    result["refused_during_outage"] = refused
    return result


def _checked(runtime: Runtime, peer: Peer, expected: int, seconds: float) -> dict[str, Any]:
    by_status = counts(runtime)
    accepted = peer.accepted.value
    if by_status != {"delivered": expected} or accepted != expected:
        raise RuntimeError(f"expected {expected} delivered once: {by_status}, peer {accepted}")
    return {"seconds": round(seconds, 3), "per_s": round(expected / seconds, 1)}


# -- the plain client loop ------------------------------------------------------------------------


def _post_all(base: str, bundles: list[bytes], go: Any, failures: Any) -> None:
    session = requests.Session()
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    go.wait()
    for bundle in bundles:
        answer = session.post(base, data=bundle, headers=headers, timeout=10)
        if answer.status_code != 200:
            with failures.get_lock():
                failures.value += 1
        answer.content  # noqa: B018 - read the body, as the worker does


def plain_run(peer: Peer, bundles: list[bytes], clients: int) -> dict[str, Any]:
    """(a): POST ``bundles`` with ``clients`` processes (round-robin shares); requests/s."""
    peer.reset()
    go, failures = _CTX.Event(), _CTX.Value("q", 0)
    shares = [bundles[i::clients] for i in range(clients)]
    processes = [
        _CTX.Process(target=_post_all, args=(peer.base, share, go, failures), daemon=True)
        for share in shares
    ]
    for p in processes:
        p.start()
    time.sleep(0.5)
    started = time.perf_counter()
    go.set()
    for p in processes:
        p.join(MAX_RUN_S)
    seconds = time.perf_counter() - started
    if failures.value or peer.accepted.value != len(bundles):
        raise RuntimeError(f"plain loop: {failures.value} failures, {peer.accepted.value} taken")
    return {"seconds": round(seconds, 3), "per_s": round(len(bundles) / seconds, 1)}


# -- the suite ---------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], key: str = "per_s") -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def _repeat(label: str, repeats: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    runs = []
    for i in range(repeats):
        runs.append(fn())
        print(f"  {label} run {i + 1}: {runs[-1]}", flush=True)
    return {
        "per_s": _median(runs),
        "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "runs": runs,
    }


def bench_backend(backend: str, peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement on one backend."""
    print(f"\n== {backend}", flush=True)
    url = fresh_database(backend)
    runtime = build_runtime(bench_settings(url))
    try:
        events = seed_sessions(runtime, args.sessions)
        partner_pk = add_partner(runtime, peer.base)
        worker_counts = [1] if backend == "sqlite" else args.workers
        result: dict[str, Any] = {
            "backend": backend,
            "sessions": len(events),
            "bridge": {},
            "plain": {},
            "drain": {},
        }
        for n in worker_counts:
            result["bridge"][n] = _repeat(
                f"bridge {n} worker(s)",
                args.repeats,
                lambda n=n: bridge_run(runtime, peer, partner_pk, events, n),
            )
        bundles = payloads(runtime)
        for clients in sorted({1, *worker_counts}):
            result["plain"][clients] = _repeat(
                f"plain {clients} client(s)",
                args.repeats,
                lambda c=clients: plain_run(peer, bundles, c),
            )
        for n in [1] if backend == "sqlite" else args.drain_workers:
            result["drain"][n] = _repeat(
                f"drain {args.backlog} with {n} worker(s)",
                args.repeats,
                lambda n=n: drain_run(
                    runtime, peer, partner_pk, events, args.backlog, n, args.outage
                ),
            )
        result["ratios"] = {
            n: round(result["bridge"][n]["per_s"] / result["plain"][n]["per_s"], 3)
            for n in worker_counts
        }
        result["bundle_bytes_median"] = int(statistics.median(len(b) for b in bundles))
        return result
    finally:
        runtime.dispose()


def print_table(results: list[dict[str, Any]], peer: str = "loopback") -> None:
    """The summary."""
    print(f"\nDeliveries to the {peer} peer (medians; goal bridge/plain >= {GOAL_RATIO:.0%})")
    header = (
        f"{'backend':10s} {'procs':>5s} {'plain req/s':>11s} {'bridge deliv/s':>14s}"
        f" {'ratio':>6s} {'verdict':>7s}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for n, bridge in r["bridge"].items():
            plain = r["plain"][n]["per_s"]
            ratio = r["ratios"][n]
            verdict = "PASS" if ratio >= GOAL_RATIO else "FAIL"
            print(
                f"{r['backend']:10s} {n:5d} {plain:11.1f} {bridge['per_s']:14.1f}"
                f" {ratio:6.2f} {verdict:>7s}"
            )
    print("\nBacklog drain after an outage ends (medians)")
    for r in results:
        for n, drain in r["drain"].items():
            refused = statistics.median(x["refused_during_outage"] for x in drain["runs"])
            print(
                f"{r['backend']:10s} {n} worker(s): {drain['seconds']:.1f} s"
                f" ({drain['per_s']:.1f} deliveries/s; {refused:.0f} attempts refused"
                " during the outage)"
            )


@contextmanager
def _peer(args: argparse.Namespace) -> Iterator[Any]:
    """The peer ``--peer`` names, started."""
    if args.peer == "medplum":
        from bench.medplum import medplum_bench_peer

        with medplum_bench_peer() as peer:
            print(f"Medplum peer at {peer.base} (one Node process)", flush=True)
            yield peer
        return
    with loopback_peer(args.peer_processes) as peer:
        print(f"loopback peer at {peer.base} ({args.peer_processes} processes)", flush=True)
        yield peer


def _csv_ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.deliveries",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sessions", type=int, default=2000, help="N for (a) and (b)")
    parser.add_argument("--backlog", type=int, default=10_000, help="deliveries for (c)")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds of outage in (c)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=_csv_ints, default=[1, 4], help="PostgreSQL (b)")
    parser.add_argument("--drain-workers", type=_csv_ints, default=[4], help="PostgreSQL (c)")
    parser.add_argument("--peer-processes", type=int, default=2)
    parser.add_argument(
        "--peer",
        choices=("loopback", "medplum"),
        default="loopback",
        help="loopback: our own answer-only peer; medplum: Medplum's FHIR logic (Node)",
    )
    parser.add_argument("--quick", action="store_true", help="500 sessions, backlog 500, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.backlog, args.repeats, args.outage = 500, 500, 1, 2.0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    WORKER_LOG.unlink(missing_ok=True)
    results: list[dict[str, Any]] = []
    try:
        with _peer(args) as peer:
            for backend in backends:
                results.append(bench_backend(backend, peer, args))
    except RuntimeError as exc:
        if type(exc).__name__ != "MedplumUnavailable":
            raise
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    print_table(results, args.peer)
    doc = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "config": dict(vars(args)),
        "goal_ratio": GOAL_RATIO,
        "results": results,
    }
    name = "deliveries-quick" if args.quick else "deliveries-latest"
    if args.peer != "loopback":
        name += f"-{args.peer}"
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    ok = all(ratio >= GOAL_RATIO for r in results for ratio in r["ratios"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
