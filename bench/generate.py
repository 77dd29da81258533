"""Load a deterministic synthetic store: ``python -m bench.generate --database-url URL --count N``.

Migrates the database, then inserts the first N resources of ``bench.dataset`` with
``ResourceStore.bulk_create`` in batches, one transaction per batch. A store that already
holds N resources is left alone; a partial one (an interrupted load) is resumed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from itertools import islice

from bench import dataset
from bench.databases import count_resources, ensure_database, parse_scale
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import write_session
from fhir_bridge.store.migrate import upgrade
from fhir_bridge.store.repository import ResourceStore

DEFAULT_BATCH = 2_000
REPORT_EVERY_S = 10.0


@dataclass
class LoadReport:
    """What a load did: resources inserted, seconds spent, and the split of that time."""

    inserted: int = 0
    seconds: float = 0.0
    build_seconds: float = 0.0
    store_seconds: float = 0.0
    skipped: bool = False

    @property
    def rate(self) -> float:
        """Resources per second over the whole load."""
        return self.inserted / self.seconds if self.seconds else 0.0


def load(
    database_url: str, count: int, *, batch: int = DEFAULT_BATCH, quiet: bool = False
) -> LoadReport:
    """Make the store at ``database_url`` hold (at least) the first ``count`` resources."""
    from fhir_bridge.services.runtime import build_runtime

    ensure_database(database_url)
    runtime = build_runtime(Settings(database_url=database_url))
    report = LoadReport()
    try:
        upgrade(runtime.engine)
        existing = count_resources(runtime.engine)
        if existing >= count:
            report.skipped = True
            if not quiet:
                print(f"generate: {existing:,} resources already stored (>= {count:,}); skipping")
            return report
        if not quiet and existing:
            print(f"generate: resuming after {existing:,} stored resources")
        resources = dataset.stream(count, skip=existing)
        started = last = time.perf_counter()
        todo = count - existing
        while True:
            t0 = time.perf_counter()
            chunk = list(islice(resources, batch))
            t1 = time.perf_counter()
            if not chunk:
                break
            with write_session(runtime.sessions) as session:
                ResourceStore(session).bulk_create(chunk)
            t2 = time.perf_counter()
            report.build_seconds += t1 - t0
            report.store_seconds += t2 - t1
            report.inserted += len(chunk)
            if not quiet and (t2 - last >= REPORT_EVERY_S or report.inserted == todo):
                last = t2
                rate = report.inserted / (t2 - started)
                eta = (todo - report.inserted) / rate if rate else 0.0
                print(
                    f"generate: {existing + report.inserted:>10,} / {count:,} resources"
                    f"  {rate:8,.0f} resources/s  eta {eta:6.0f} s",
                    flush=True,
                )
        report.seconds = time.perf_counter() - started
        if not quiet:
            print(
                f"generate: inserted {report.inserted:,} resources in {report.seconds:.1f} s"
                f" = {report.rate:,.0f} resources/s (building {report.build_seconds:.1f} s,"
                f" bulk_create+commit {report.store_seconds:.1f} s)",
                flush=True,
            )
        return report
    finally:
        runtime.dispose()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__)
    parser.add_argument("--database-url", required=True, help="SQLAlchemy URL of the store")
    parser.add_argument("--count", required=True, help="resources wanted, e.g. 10000, 10k, 1m")
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="resources per transaction"
    )
    args = parser.parse_args(argv)
    load(args.database_url, parse_scale(args.count), batch=args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
