"""Where a delivery worker spends its time: ``python -m bench.delivery_profile [--backend sqlite]``.

Reuses the store ``bench.deliveries`` left behind (run it first, e.g. with ``--quick``):
re-enqueues its deliveries, then runs one ``Worker`` in this process under cProfile against the
loopback peer until the queue is empty, and prints the top functions by cumulative and own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time
from urllib.parse import quote

from sqlalchemy import select

from bench.databases import DATA_DIR
from bench.deliveries import (
    PG_SCHEMA,
    PG_URL,
    bench_settings,
    counts,
    documented_events,
    enqueue,
    utcnow,
)
from bench.peer import loopback_peer
from fhir_bridge.outbox.pipeline import make_worker
from fhir_bridge.outbox.worker import WorkerConfig
from fhir_bridge.services.runtime import build_runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.models import Partner


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.delivery_profile")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args(argv)
    if args.backend == "sqlite":
        url = f"sqlite:///{DATA_DIR / 'deliveries-sqlite.db'}"
    else:
        url = f"{PG_URL}?options={quote(f'-csearch_path={PG_SCHEMA}')}"
    runtime = build_runtime(bench_settings(url))
    with loopback_peer() as peer:
        with write_session(runtime.sessions) as session:
            partner = session.execute(select(Partner)).scalar_one()
            partner.base_url = peer.base
            partner_pk = partner.pk
        with read_session(runtime.sessions) as session:
            events = documented_events(session)
        enqueue(runtime, partner_pk, events, len(events))
        stop = threading.Event()
        config = WorkerConfig.from_settings(runtime.settings, worker_id="profile")
        worker = make_worker(runtime, config, clock=utcnow, sleep=stop.wait)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        while worker.run_once():
            pass
        profile.disable()
        seconds = time.perf_counter() - started
        print(f"{len(events)} deliveries in {seconds:.2f} s: {len(events) / seconds:.1f}/s")
        print(counts(runtime))
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(key).print_stats(args.top)
        print(out.getvalue())
    runtime.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
