"""Benchmark: a progress report for a referral with 24 visits, as HTML and as PDF.

Goal (issue 14): generating a report for a referral with 24 documented visits takes <= 200 ms.
A fresh SQLite store gets the sample data and 24 visits of the walkthrough patient (the
whiplash session record, a few days apart, pain and range of motion changing), posted through
the clinic API. Then, repeated, it times the whole request (``GET
/api/v1/referrals/{id}/progress-report`` in process: read, engine, layout, render) and its
parts, and prints the medians.

    .venv/bin/python -m bench.progress_report [--visits 24] [--repeats 30]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from fhir_bridge.app import create_app
from fhir_bridge.reports.html import render_html
from fhir_bridge.reports.model import build_report
from fhir_bridge.reports.pdf import render_pdf
from fhir_bridge.services.loading import load_bundle
from fhir_bridge.services.progress_report import gather_episode
from fhir_bridge.services.runtime import build_runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import make_engine
from fhir_bridge.store.migrate import upgrade

SAMPLES = Path(__file__).resolve().parents[1] / "sample_bundles"
REFERRAL = "sr-rivera-massage-2026-11"
GOAL_MS = 200.0


def _visit(n: int) -> dict:
    """The walkthrough session, ``n`` x 3 days later, its values drifting towards the goals."""
    body = copy.deepcopy(json.loads((SAMPLES / "sessions" / "whiplash-neck-pain.json").read_text()))
    body["session_id"] = f"BENCH-{n:03d}"
    shift = timedelta(days=3 * n)

    def later(value: str) -> str:
        return (datetime.fromisoformat(value) + shift).isoformat()

    body["started_at"], body["ended_at"] = later(body["started_at"]), later(body["ended_at"])
    for a in body["assessments"]:
        if a.get("at"):
            a["at"] = later(a["at"])
        if a["measure"] == "pain_nrs":
            a["value"] = max(0, a["value"] - n // 6)
        elif a["measure"].endswith("_rom"):
            a["value"] = min(90, a["value"] + n)
    return body


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: templates, fonts, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        settings = Settings(
            database_url=url, dev_open_access=True, log_level="WARNING", rate_limit_per_minute=0
        )
        runtime = build_runtime(settings)
        try:
            for path in sorted(SAMPLES.glob("*.json")):
                load_bundle(runtime, json.loads(path.read_text()))
            app = create_app(runtime=runtime)
            client = app.test_client()
            for n in range(args.visits - 2):  # the samples already hold 2 visits
                response = client.post("/api/v1/sessions", json=_visit(n))
                assert response.status_code in (200, 201), response.get_data(as_text=True)
            tables = app.extensions["fhir_bridge_tables"]
            episode = gather_episode(runtime, REFERRAL)
            report = build_report(
                episode, tables, kind="progress", clinic="Bench clinic", generated_at="now"
            )
            target = f"/api/v1/referrals/{REFERRAL}/progress-report"
            figures = {
                "GET as PDF (whole request)": _median_ms(
                    lambda: client.get(target, headers={"Accept": "application/pdf"}),
                    args.repeats,
                ),
                "GET as HTML (whole request)": _median_ms(
                    lambda: client.get(target, headers={"Accept": "text/html"}), args.repeats
                ),
                # rendered and stored as the next DocumentReference version, with its event
                "POST: filed as DocumentReference": _median_ms(
                    lambda: client.post(target), args.repeats
                ),
                "  read the episode": _median_ms(
                    lambda: gather_episode(runtime, REFERRAL), args.repeats
                ),
                "  engine + report model": _median_ms(
                    lambda: build_report(
                        episode, tables, kind="progress", clinic="Bench clinic", generated_at="now"
                    ),
                    args.repeats,
                ),
                "  render HTML (with SVG charts)": _median_ms(
                    lambda: render_html(report), args.repeats
                ),
                "  render PDF (vector charts)": _median_ms(
                    lambda: render_pdf(report), args.repeats
                ),
            }
        finally:
            runtime.dispose()
    print(
        f"progress report, referral with {len(episode.procedures)} visits, "
        f"{len(episode.observations)} Observations, {len(report.series)} charts; "
        f"medians of {args.repeats} runs"
    )
    for label, ms in figures.items():
        print(f"{label:<34} {ms:8.1f} ms")
    worst = max(figures["GET as PDF (whole request)"], figures["GET as HTML (whole request)"])
    verdict = "PASS" if worst <= GOAL_MS else "FAIL"
    print(f"goal: <= {GOAL_MS:.0f} ms per report: {verdict} ({worst:.1f} ms)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
