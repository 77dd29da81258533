"""Where a session POST spends its time: ``python -m bench.session_profile [--requests 300]``.

One process, one thread, no gunicorn: the app from ``create_app(Settings(database_url=...))``
on a fresh store (``bench.sessions.fresh_database``), its Flask test client posts ``--warmup``
distinct records, then ``--requests`` more under cProfile. Prints the wall time per request,
the top functions by cumulative and by own time, and own time summed per area (our packages,
SQLAlchemy, the database driver, fhir.resources/pydantic, marshmallow, Flask/werkzeug).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict
from typing import Any

from bench import session_phases
from bench.databases import BACKENDS
from bench.session_records import body
from bench.sessions import fresh_database
from fhir_bridge.app import create_app
from fhir_bridge.settings import Settings

AREAS = (
    ("fhir_bridge/records", "fhir_bridge.records (schema load)"),
    ("fhir_bridge/mapping", "fhir_bridge.mapping"),
    ("fhir_bridge/fhir/validation", "fhir_bridge.fhir.validation"),
    ("fhir_bridge/fhir/search_index", "fhir_bridge.fhir.search_index"),
    ("fhir_bridge/fhir", "fhir_bridge.fhir (other)"),
    ("fhir_bridge/store", "fhir_bridge.store"),
    ("fhir_bridge/services", "fhir_bridge.services"),
    ("fhir_bridge/api", "fhir_bridge.api"),
    ("fhir_bridge", "fhir_bridge (other)"),
    ("sqlalchemy", "sqlalchemy"),
    ("psycopg", "psycopg"),
    ("sqlite3", "sqlite3"),
    ("fhir/resources", "fhir.resources"),
    ("fhir_core", "fhir_core"),
    ("pydantic", "pydantic"),
    ("marshmallow", "marshmallow"),
    ("werkzeug", "werkzeug"),
    ("flask", "flask"),
    ("json", "json"),
)


def _area(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins / C calls"
    for needle, label in AREAS:
        if f"/{needle}/" in filename or filename.endswith(f"/{needle}.py"):
            return label
    return "other"


def by_area(stats: pstats.Stats) -> dict[str, float]:
    """Own (tottime) seconds summed per area, largest first."""
    areas: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), row in stats.stats.items():  # type: ignore[attr-defined]
        areas[_area(filename)] += row[2]
    return dict(sorted(areas.items(), key=lambda kv: -kv[1]))


def profile(backend: str, requests: int, warmup: int, top: int) -> dict[str, Any]:
    """Post ``warmup`` records, then ``requests`` plain, timed per phase, and profiled."""
    url = fresh_database(backend)
    app = create_app(Settings(database_url=url, log_level="WARNING"))
    client = app.test_client()

    def post(n: int) -> None:
        answer = client.post(
            "/api/v1/sessions", data=body(n), headers={"Content-Type": "application/json"}
        )
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.get_data(as_text=True)[:800]}")

    for n in range(warmup):
        post(1_000_000 + n)
    t0 = time.perf_counter()
    for n in range(requests):
        post(n)
    plain_ms = (time.perf_counter() - t0) / requests * 1000
    engine = app.extensions["fhir_bridge"].engine
    with session_phases.phases(engine) as totals:
        t0 = time.perf_counter()
        for n in range(2 * requests, 3 * requests):
            post(n)
        phase_wall = time.perf_counter() - t0
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(requests, 2 * requests):
        post(n)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"\n== profile, {backend}: {requests} fresh sessions via the Flask test client")
    print(f"wall time without profiler: {plain_ms:.2f} ms/request (one thread, one process)")
    phase_info = session_phases.report(totals, requests, phase_wall)
    print(f"\nprofiled: {total / requests * 1000:.2f} ms/request\n\nown time per area (cProfile):")
    areas = by_area(stats)
    for label, seconds in areas.items():
        print(f"  {label:36s} {seconds / requests * 1000:7.2f} ms/request  {seconds / total:6.1%}")
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(top)
        print(f"\n-- top {top} by {key} (seconds over {requests} requests)")
        print(out.getvalue().split("\n", 6)[-1].rstrip())
    return {
        "ms_per_request": round(plain_ms, 2),
        "phases": phase_info,
        "areas_ms": {k: round(v / requests * 1000, 3) for k, v in areas.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.session_profile", description=__doc__)
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    profile(args.backend, args.requests, args.warmup, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
