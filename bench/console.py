"""Clinic console page times: server time per page, p50/p95 (ms), on a clinic-sized store.

``python -m bench.console [--patients 10000 --visits 10] [--database-url URL] [--requests 100]``
loads (once) a store of PATIENTS patients with VISITS visits each (``bench/console_dataset.py``;
default 10k patients and 100k visits), then logs a clinic admin in and requests each page
REQUESTS times through the app in-process (the WSGI call, no network: server time only),
with the production settings (audit spooled and flushed by its background thread).

Goal (issue 15): every page's p95 <= 100 ms. Prints a table and PASS/FAIL; exit 1 on FAIL.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench import console_dataset as data
from bench.databases import ensure_database
from fhir_bridge.app import create_app
from fhir_bridge.services import staff_users
from fhir_bridge.services.runtime import build_runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import read_session
from fhir_bridge.store.migrate import upgrade
from fhir_bridge.store.models import ClinicSession

GOAL_P95_MS = 100.0
PASSWORD = "bench console password"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(url: str, patients: int, visits: int) -> None:
    """Migrate and load the store unless it already holds the sessions wanted."""
    ensure_database(url)
    rt = build_runtime(Settings(database_url=url))
    try:
        upgrade(rt.engine)
        with read_session(rt.sessions) as session:
            have = session.scalar(select(func.count()).select_from(ClinicSession))
        if have >= patients * visits:
            print(f"store holds {have:,} visits; not loading")
        else:
            started = time.perf_counter()
            data.load(rt, patients, visits)
            print(f"loaded {patients:,} patients, {patients * visits:,} visits "
                  f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        if staff_users.get_user(rt, "bench-admin") is None:
            staff_users.add_user(
                rt, username="bench-admin", display_name="Bench", role="clinic-admin",
                password=PASSWORD,
            )  # fmt: skip
    finally:
        rt.dispose()


def measure(url: str, patients: int, requests: int, spool: Path) -> dict[str, list[float]]:
    """Milliseconds per request for each page."""
    settings = Settings(
        database_url=url,
        log_level="WARNING",
        audit_spool_dir=str(spool),
        public_base_url="https://bench.local",
    )
    app = create_app(settings)
    client = app.test_client()
    client.environ_base.update({"wsgi.url_scheme": "https", "HTTP_HOST": "bench.local"})
    referer = {"Referer": "https://bench.local/"}
    token = _CSRF.search(client.get("/login").get_data(as_text=True)).group(1)
    resp = client.post(
        "/login",
        data={"username": "bench-admin", "password": PASSWORD, "csrf_token": token},
        headers=referer,
    )
    assert resp.status_code == 302, resp.status_code
    token = _CSRF.search(client.get("/patients").get_data(as_text=True)).group(1)
    mid = patients // 2
    pages = {
        "today": ("GET", "/", None),
        "referrals inbox (requested)": ("GET", "/referrals?status=requested", None),
        "referral": ("GET", f"/referrals/bsr-{mid:06d}", None),
        "patient search (name)": ("POST", "/patients", {"q": "Lindq", "csrf_token": token}),
        "patient (10 visits, chart)": ("GET", f"/patients/{data.patient_id(mid)}", None),
        "visit": ("GET", f"/visits/BS-{mid:06d}-03", None),
        "deliveries": ("GET", "/deliveries", None),
        "deliveries (dead)": ("GET", "/deliveries?status=dead", None),
        "audit log": ("GET", "/audit", None),
    }
    times: dict[str, list[float]] = {}
    for name, (method, path, form) in pages.items():
        for _ in range(5):  # warm-up
            client.open(path, method=method, data=form, headers=referer)
        samples = []
        for _ in range(requests):
            t0 = time.perf_counter()
            resp = client.open(path, method=method, data=form, headers=referer)
            resp.get_data()
            samples.append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 200, (name, resp.status_code)
        times[name] = samples
    app.extensions["fhir_bridge_audit"].close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--visits", type=int, default=10, help="visits per patient")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    default = Path(__file__).parent / "data" / f"console_{args.patients}x{args.visits}.db"
    default.parent.mkdir(exist_ok=True)
    url = args.database_url or f"sqlite:///{default}"
    prepare(url, args.patients, args.visits)
    with tempfile.TemporaryDirectory(prefix="bench-console-audit-") as spool:
        times = measure(url, args.patients, args.requests, Path(spool))
    backend = url.split(":", 1)[0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nconsole pages, {args.patients:,} patients x {args.visits} visits, {backend}, "
        f"{args.requests} requests each, server time in-process (ms), load average {load}"
    )
    print(f"{'page':32} {'p50':>8} {'p95':>8} {'max':>8}")
    failed = False
    for name, samples in times.items():
        p95 = _percentile(samples, 0.95)
        failed |= p95 > GOAL_P95_MS
        print(f"{name:32} {statistics.median(samples):8.1f} {p95:8.1f} {max(samples):8.1f}")
    print(f"goal: every page p95 <= {GOAL_P95_MS:.0f} ms: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
