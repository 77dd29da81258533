"""Session benchmark: ``python -m bench.sessions [--backends sqlite,postgresql] [--clients 8]``.

1. In-process (``bench.session_inprocess``): load + map + validate of each sample record vs bare
   fhir.resources R4B validation of the same resources; goal <= 1.3x.
2. HTTP, per backend on a fresh store (SQLite ``bench/data/sessions-sqlite.db`` deleted first,
   PostgreSQL ``fhir_bridge_bench_sessions`` dropped and recreated), migrated, under gunicorn
   with 2 workers: ``--warmup`` s of posting, then ``--clients`` threads post distinct records
   for ``--duration`` s (sessions/s, errors, p50/p95/p99), then replay the records stored in
   that run for ``--replay-duration`` s. Goal: >= 300 sessions/s with p99 <= 50 ms.

Prints a table and writes ``bench/results/sessions-latest.json``. Exits 1 if a goal FAILs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import session_inprocess
from bench.databases import BACKENDS, DATA_DIR, PG_ADMIN_DB, PG_SERVER, RESULTS_DIR
from bench.server import THREADS, WORKERS, serve
from bench.session_load import FreshBodies, PostRun, ReplayBodies, post_for
from bench.session_records import PATIENTS
from fhir_bridge.store.db import make_engine
from fhir_bridge.store.migrate import upgrade

PG_DATABASE = "fhir_bridge_bench_sessions"
GOAL_RPS = 300.0
GOAL_P99_MS = 50.0
WARMUP_PREFIX = "WARM"


def fresh_database(backend: str) -> str:
    """Delete / drop-and-create the backend's session store, migrate it, return its URL."""
    if backend == "sqlite":
        path = DATA_DIR / "sessions-sqlite.db"
        for suffix in ("", "-wal", "-shm", "-writer.lock"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    elif backend == "postgresql":
        url = f"{PG_SERVER}/{PG_DATABASE}"
        admin = make_engine(
            str(make_url(url).set(database=PG_ADMIN_DB)), isolation_level="AUTOCOMMIT"
        )
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{PG_DATABASE}"'))
        finally:
            admin.dispose()
    else:
        raise ValueError(f"unknown backend {backend!r}")
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def _line(label: str, run: PostRun) -> str:
    s = run.summary()
    lat = s["latency_ms"]
    return (
        f"  {label:8s} {s['sessions_per_s']:7.1f} sessions/s  ok {run.ok:6d}  errors {run.errors}"
        f"  p50 {lat.get('p50', 0):6.1f}  p95 {lat.get('p95', 0):6.1f}"
        f"  p99 {lat.get('p99', 0):6.1f} ms"
        f"  client cpu {s['client_cpu_share_of_machine']:.0%} of machine,"
        f" machine busy {s['machine_busy_share']:.0%}"
    )


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up, fresh-record run and replay run against one freshly created store."""
    url = fresh_database(backend)
    print(f"\n== sessions over HTTP, {backend}: {url} (fresh, migrated)", flush=True)
    result: dict[str, Any] = {"backend": backend, "database_url": url}
    log = RESULTS_DIR / f"gunicorn-sessions-{backend}.log"
    with serve(url, log) as server:
        print(f"gunicorn up on {server.base} ({WORKERS} workers)", flush=True)
        warm = post_for(server.port, FreshBodies(prefix=WARMUP_PREFIX), args.clients, args.warmup)
        print(_line("warm-up", warm), flush=True)
        result["warmup"] = warm.summary()
        main = post_for(server.port, FreshBodies(), args.clients, args.duration, keep=True)
        print(_line("fresh", main), flush=True)
        result["fresh"] = main.summary()
        if main.first_error:
            print(f"  first error: {main.first_error}", flush=True)
        if main.stored:
            replay = post_for(
                server.port, ReplayBodies(main.stored), args.clients, args.replay_duration
            )
            print(_line("replay", replay), flush=True)
            result["replay"] = replay.summary()
            if replay.first_error:
                print(f"  first error: {replay.first_error}", flush=True)
    lat = result["fresh"]["latency_ms"]
    passed = (
        result["fresh"]["errors"] == 0
        and result["fresh"]["sessions_per_s"] >= GOAL_RPS
        and lat.get("p99", float("inf")) <= GOAL_P99_MS
    )
    result["verdict"] = "PASS" if passed else "FAIL"
    return result


def print_table(inproc: dict[str, Any] | None, http: list[dict[str, Any]]) -> None:
    """The in-process table, the HTTP table and the goal lines."""
    if inproc:
        session_inprocess.print_table(inproc)
    if not http:
        return
    print(
        f"\nPOST /api/v1/sessions under gunicorn ({WORKERS} workers x {THREADS} threads, as "
        "`serve` runs it); the client threads"
        f" run on the same {os.cpu_count()} cores"
    )
    header = (
        f"{'backend':10s} {'run':7s} {'clients':>7s} {'sess/s':>7s} {'ok':>6s} {'errors':>6s}"
        f" {'p50':>6s} {'p95':>6s} {'p99':>6s} {'client cpu':>10s} {'busy':>5s} statuses"
    )
    print(header)
    print("-" * len(header))
    for r in http:
        for run in ("warmup", "fresh", "replay"):
            s = r.get(run)
            if not s:
                continue
            lat = s["latency_ms"]
            print(
                f"{r['backend']:10s} {run:7s} {s['clients']:7d} {s['sessions_per_s']:7.1f}"
                f" {s['sessions_ok']:6d} {s['errors']:6d} {lat.get('p50', 0):6.1f}"
                f" {lat.get('p95', 0):6.1f} {lat.get('p99', 0):6.1f}"
                f" {s['client_cpu_share_of_machine']:10.0%} {s['machine_busy_share']:5.0%}"
                f" {s['statuses']}"
            )
    print(
        "(latency in ms, client-side, incl. the loopback connect; client cpu = os.times() of"
        " the load generator / (wall time x cores); busy = whole machine from /proc/stat)"
    )
    print(f"\nGoal: fresh records >= {GOAL_RPS:g} sessions/s with p99 <= {GOAL_P99_MS:g} ms")
    for r in http:
        s = r["fresh"]
        print(
            f"  {r['backend']:10s} {s['sessions_per_s']:.1f} sessions/s,"
            f" p99 {s['latency_ms'].get('p99', float('nan')):.1f} ms, errors {s['errors']}"
            f" -> {r['verdict']}"
        )
        if s["first_error"]:
            print(f"    first error: {s['first_error']}")


def write_json(
    inproc: dict[str, Any] | None, http: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    """bench/results/sessions-latest.json"""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "clients": args.clients,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "replay_duration_s": args.replay_duration,
            "patients": PATIENTS,
            "workers": WORKERS,
            "number": args.number,
            "repeats": args.repeats,
        },
        "in_process": inproc,
        "http": http,
        "goal": {"max_ratio": session_inprocess.GOAL_RATIO, "rps": GOAL_RPS, "p99_ms": GOAL_P99_MS},
    }
    path = RESULTS_DIR / "sessions-latest.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")


def _backends(value: str) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    if bad := [v for v in items if v not in BACKENDS]:
        raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(BACKENDS)}")
    return items


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.sessions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backends", type=_backends, default=list(BACKENDS))
    parser.add_argument("--clients", type=int, default=8, help="posting threads")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of fresh records")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up")
    parser.add_argument("--replay-duration", type=float, default=10.0, help="seconds of replay")
    parser.add_argument("--number", type=int, default=20, help="in-process iterations per run")
    parser.add_argument("--repeats", type=int, default=7, help="in-process runs (median)")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    signal.signal(signal.SIGTERM, _interrupt)  # stop gunicorn on `kill` too
    args = parse_args(argv)
    inproc: dict[str, Any] | None = None
    http: list[dict[str, Any]] = []
    try:
        if not args.skip_in_process:
            print("== in-process: load + map + validate vs bare R4B validation", flush=True)
            inproc = session_inprocess.run(args.number, args.repeats)
            write_json(inproc, http, args)
        if not args.skip_http:
            for backend in args.backends:
                http.append(bench_backend(backend, args))
                write_json(inproc, http, args)
    except KeyboardInterrupt:
        print("\ninterrupted; reporting what was measured", file=sys.stderr)
    print_table(inproc, http)
    write_json(inproc, http, args)
    verdicts = [r["verdict"] for r in http] + ([inproc["verdict"]] if inproc else [])
    return 1 if "FAIL" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
