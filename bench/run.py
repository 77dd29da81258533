"""``make bench``: read and search latency and throughput of the bridge under gunicorn.

For each backend (SQLite file, PostgreSQL database) and scale (10k and 1M resources): migrate,
generate the synthetic store if needed, ANALYZE, start gunicorn with 2 workers, warm up, then

* latency: one sequential client, ``--requests`` requests per query, repeated ``--repeats``
  times; each percentile reported is the median over the repeats;
* throughput: ``--clients`` threads for ``--duration`` seconds on the goal query and on reads.

Prints a table and the goal check, and writes ``bench/results/latest.json``.

``--suite sessions`` runs the session-write benchmark (``bench.sessions``) instead, with the
same ``--backends`` and ``--clients``; ``--suite all`` (the default) runs both, reads first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import dataset, measure
from bench.databases import (
    BACKENDS,
    RESULTS_DIR,
    analyze,
    count_resources,
    database_url,
    parse_scale,
)
from bench.generate import load
from bench.server import serve
from fhir_bridge.store.db import make_engine

SCALES = ("10k", "1m")
GOAL_P95_MS = 20.0
GOAL_RATIO = 1.5
WARMUP = 200
SEED = "fhir-bridge-bench"


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in d.items()}


def prepare(backend: str, scale: str) -> tuple[str, int, dict[str, Any]]:
    """Migrate, generate and analyze one store; returns its URL, resource count and load info."""
    url = database_url(backend, scale)
    wanted = parse_scale(scale)
    print(f"\n== {backend} {scale}: {url}", flush=True)
    report = load(url, wanted)
    engine = make_engine(url)
    try:
        t0 = time.perf_counter()
        analyze(engine)
        analyze_s = time.perf_counter() - t0
        stored = count_resources(engine)
    finally:
        engine.dispose()
    info = {
        "inserted": report.inserted,
        "seconds": round(report.seconds, 1),
        "resources_per_s": round(report.rate, 1),
        "analyze_s": round(analyze_s, 1),
    }
    return url, stored, info


def bench_one(backend: str, scale: str, args: argparse.Namespace) -> dict[str, Any]:
    """All measurements of one backend at one scale."""
    url, stored, load_info = prepare(backend, scale)
    patients = dataset.patients_in(stored)
    result: dict[str, Any] = {
        "backend": backend,
        "scale": scale,
        "resources": stored,
        "patients": patients,
        "load": load_info,
        "latency_ms": {},
        "throughput": {},
    }
    seed = f"{SEED}:{scale}"
    log = RESULTS_DIR / f"gunicorn-{backend}-{scale}.log"
    with serve(url, log) as server:
        print(f"gunicorn up on {server.base} (2 workers x 4 threads); warming up", flush=True)
        result["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
        names = list(measure.QUERIES)
        warm = [
            measure.targets(q, patients, WARMUP // len(names) + 1, seed + ":warm") for q in names
        ]
        measure.sequential(
            server.port, [p for group in zip(*warm, strict=True) for p in group][:WARMUP]
        )
        for query in names:
            paths = measure.targets(query, patients, args.requests, seed)
            found = measure.sample_entries(server.port, paths[:20])
            runs = [
                measure.percentiles(measure.sequential(server.port, paths))
                for _ in range(args.repeats)
            ]
            median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            result["latency_ms"][query] = {
                **_round(median),
                "runs": [_round(r) for r in runs],
                "mean_entries": round(found, 1),
            }
            print(
                f"  {query:22s} p50 {median['p50']:7.2f}  p95 {median['p95']:7.2f}"
                f"  p99 {median['p99']:7.2f} ms  ({found:.1f} entries/response)",
                flush=True,
            )
        for query in (measure.GOAL_QUERY, "read_patient"):
            paths = measure.targets(query, patients, 2_000, seed + ":load")
            tp = measure.concurrent(server.port, paths, args.clients, args.duration)
            result["throughput"][query] = tp.summary()
            print(f"  throughput {query:22s} {tp.rps:8.1f} req/s  errors {tp.errors}", flush=True)
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def goal_check(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend: the goal query's p95 at 1M, its 10k figure, the ratio, and PASS/FAIL."""
    checks = []
    for backend in dict.fromkeys(r["backend"] for r in results):
        by_scale = {r["scale"]: r for r in results if r["backend"] == backend}
        small, big = by_scale.get("10k"), by_scale.get("1m")
        p95_10k = small["latency_ms"][measure.GOAL_QUERY]["p95"] if small else None
        p95_1m = big["latency_ms"][measure.GOAL_QUERY]["p95"] if big else None
        ratio = p95_1m / p95_10k if p95_1m is not None and p95_10k else None
        if p95_1m is None or ratio is None:
            verdict = "N/A (needs both 10k and 1m)"
        else:
            verdict = "PASS" if p95_1m <= GOAL_P95_MS and ratio <= GOAL_RATIO else "FAIL"
        checks.append(
            {
                "backend": backend,
                "p95_10k_ms": p95_10k,
                "p95_1m_ms": p95_1m,
                "ratio": ratio,
                "verdict": verdict,
            }
        )
    return checks


def print_table(results: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    """The summary table and the goal lines."""
    print("\nLatency, sequential single client (ms; median of the repeats)")
    header = (
        f"{'backend':10s} {'scale':5s} {'query':58s}"
        f" {'p50':>7s} {'p95':>7s} {'p99':>7s} {'entries':>7s}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for query, lat in r["latency_ms"].items():
            label = measure.QUERIES[query][0]
            print(
                f"{r['backend']:10s} {r['scale']:5s} {label:58s}"
                f" {lat['p50']:7.2f} {lat['p95']:7.2f} {lat['p99']:7.2f} {lat['mean_entries']:7.1f}"
            )
    print("\nThroughput (concurrent clients, fixed duration)")
    header = (
        f"{'backend':10s} {'scale':5s} {'query':22s} {'clients':>7s} {'req/s':>8s}"
        f" {'errors':>6s} {'p50':>7s} {'p95':>7s}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for query, tp in r["throughput"].items():
            lat = tp["latency_under_load_ms"]
            print(
                f"{r['backend']:10s} {r['scale']:5s} {query:22s} {tp['clients']:7d}"
                f" {tp['rps']:8.1f} {tp['errors']:6d}"
                f" {lat.get('p50', 0):7.2f} {lat.get('p95', 0):7.2f}"
            )
    for r in results:
        before, after = r.get("loadavg_before"), r.get("loadavg_after")
        print(
            f"load average (1/5/15 min) {r['backend']} {r['scale']}: before {before}, after {after}"
        )
    goal = measure.QUERIES[measure.GOAL_QUERY][0]
    print(f"\nGoal: {goal} p95 <= {GOAL_P95_MS:g} ms at 1M and <= {GOAL_RATIO:g}x its 10k figure")
    for c in checks:
        print(
            f"  {c['backend']:10s} p95 10k {fmt(c['p95_10k_ms'], ' ms')},"
            f" 1m {fmt(c['p95_1m_ms'], ' ms')}, ratio 1m/10k {fmt(c['ratio'], 'x')}"
            f" -> {c['verdict']}"
        )


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with two decimals and its unit, or n/a."""
    return "n/a" if value is None else f"{value:.2f}{unit}"


def write_json(
    results: list[dict[str, Any]], checks: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    """bench/results/latest.json"""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "requests": args.requests,
            "repeats": args.repeats,
            "clients": args.clients,
            "duration_s": args.duration,
            "warmup": WARMUP,
            "workers": 2,
        },
        "queries": {k: v[0] for k, v in measure.QUERIES.items()},
        "results": results,
        "goal": {"p95_ms": GOAL_P95_MS, "max_ratio": GOAL_RATIO, "checks": checks},
    }
    path = RESULTS_DIR / "latest.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")


def _csv(value: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    if allowed and (bad := [v for v in items if v not in allowed]):
        raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
    return items


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    signal.signal(signal.SIGTERM, _interrupt)  # stop gunicorn on `kill` too, not only Ctrl-C
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scales", type=_csv, default=list(SCALES), help="e.g. 10k,1m")
    parser.add_argument("--backends", type=lambda v: _csv(v, BACKENDS), default=list(BACKENDS))
    parser.add_argument("--requests", type=int, default=500, help="requests per latency run")
    parser.add_argument("--repeats", type=int, default=3, help="latency runs per query")
    parser.add_argument("--clients", type=int, default=8, help="threads in the throughput runs")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run")
    parser.add_argument(
        "--suite",
        choices=("reads", "sessions", "all"),
        default="all",
        help="reads: this read/search suite; sessions: bench.sessions; all: both (default)",
    )
    args = parser.parse_args(argv)
    status = 0
    if args.suite in ("reads", "all"):
        status, interrupted = run_reads(args)
        if interrupted:
            return status
    if args.suite in ("sessions", "all"):
        from bench import sessions

        print("\n==== session suite (bench.sessions)", flush=True)
        backends = ",".join(args.backends)
        status = max(
            status, sessions.main(["--backends", backends, "--clients", str(args.clients)])
        )
    return status


def run_reads(args: argparse.Namespace) -> tuple[int, bool]:
    """The read/search suite; returns its exit status and whether it was interrupted."""
    results: list[dict[str, Any]] = []
    interrupted = False
    try:
        for backend in args.backends:
            for scale in args.scales:
                results.append(bench_one(backend, scale, args))
                write_json(results, goal_check(results), args)
    except KeyboardInterrupt:
        print("\ninterrupted; reporting what was measured", file=sys.stderr)
        interrupted = True
    checks = goal_check(results)
    print_table(results, checks)
    write_json(results, checks, args)
    return (0 if all(c["verdict"] != "FAIL" for c in checks) else 1), interrupted


if __name__ == "__main__":
    sys.exit(main())
