"""Bulk Data ``$export`` throughput and the runner's peak memory.

``python -m bench.bulk_export --patients 10000 --resources 1000000 --backends sqlite,postgresql``

Per backend: seeds a store of its own (once; a store already holding the resources is
reused) with N patients, each with a Patient, a Coverage naming one of five payers and
Observations up to the resource count; queues an export through the service (system level
as a clinic admin, and with ``--level group`` a payer's Group export under its member scope);
runs it in a separate ``fhir-bridge export run-once`` process; prints resources/s (exported
lines / the runner process's wall time, start-up included) and the runner's peak RSS
(``ru_maxrss`` of the child). ``--repeats`` runs give the median.

Seeding: Patients and Coverages go through ``ResourceStore.bulk_create`` (fully indexed);
Observations are inserted with SQL (``resource``, ``resource_version`` and their ``patient``
and ``subject`` reference index rows, which is all an export reads) to keep seeding minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text

from bench.databases import BACKENDS, DATA_DIR, PG_SERVER, ensure_database
from fhir_bridge.fhir import jsonio
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import write_session
from fhir_bridge.store.migrate import upgrade
from fhir_bridge.store.models import Resource, ResourceVersion, SearchReference
from fhir_bridge.store.repository import ResourceStore

PAYERS = [f"payer-{k}" for k in range(5)]
BATCH = 5_000


def database_url(backend: str, patients: int, resources: int) -> str:
    """A store per backend and size."""
    name = f"fhir_bridge_bench_bulk_{patients}_{resources}"
    if backend == "sqlite":
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DATA_DIR / (name + '.db')}"
    return f"{PG_SERVER}/{name}"


def _observation(pid: str, oid: str, j: int, at: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"versionId": "1", "lastUpdated": at},
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "72514-3", "display": "Pain severity"}
            ]
        },
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"2026-{1 + j % 12:02d}-{1 + j % 28:02d}T10:00:00Z",
        "valueInteger": j % 11,
    }


def seed(url: str, patients: int, resources: int) -> int:
    """Make the store hold the data set; returns the number of resources in it."""
    from fhir_bridge.services.runtime import build_runtime

    ensure_database(url)
    rt = build_runtime(Settings(database_url=url))
    try:
        upgrade(rt.engine)
        with rt.engine.connect() as conn:
            have = int(conn.execute(text("SELECT count(*) FROM resource")).scalar() or 0)
        if have:
            return have
        t0 = time.perf_counter()
        people: list[dict] = [{"resourceType": "Organization", "id": p, "name": p} for p in PAYERS]
        for i in range(patients):
            pid = f"pat-{i:06d}"
            people.append({"resourceType": "Patient", "id": pid, "gender": "female"})
            people.append(
                {
                    "resourceType": "Coverage",
                    "id": f"cov-{i:06d}",
                    "status": "active",
                    "beneficiary": {"reference": f"Patient/{pid}"},
                    "payor": [{"reference": f"Organization/{PAYERS[i % len(PAYERS)]}"}],
                    "period": {"start": "2020-01-01"},
                }
            )
        for start in range(0, len(people), BATCH):
            with write_session(rt.sessions) as session:
                ResourceStore(session).bulk_create(people[start : start + BATCH])
        observations = max(resources - len(people), 0)
        per_patient = -(-observations // patients)
        _seed_observations(rt, patients, per_patient, observations)
        print(
            f"seeded {len(people) + observations:,} resources in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        return len(people) + observations
    finally:
        rt.dispose()


def _seed_observations(rt, patients: int, per_patient: int, total: int) -> None:
    """Observations by SQL: resource, resource_version, and their patient/subject rows."""
    now = datetime.now(UTC).replace(tzinfo=None)
    at = now.isoformat(timespec="milliseconds") + "Z"
    with rt.engine.connect() as conn:
        next_res = int(conn.execute(text("SELECT coalesce(max(pk), 0) FROM resource")).scalar()) + 1
        next_ver = (
            int(conn.execute(text("SELECT coalesce(max(pk), 0) FROM resource_version")).scalar())
            + 1
        )
    done = 0
    rows_res, rows_ver, rows_ref = [], [], []

    def flush() -> None:
        with write_session(rt.sessions) as session:
            session.execute(insert(Resource), rows_res)
            session.execute(insert(ResourceVersion), rows_ver)
            session.execute(insert(SearchReference), rows_ref)
        rows_res.clear()
        rows_ver.clear()
        rows_ref.clear()

    for i in range(patients):
        pid = f"pat-{i:06d}"
        for j in range(per_patient):
            if done >= total:
                break
            oid = f"obs-{i:06d}-{j:03d}"
            rpk, vpk = next_res + done, next_ver + done
            body = _observation(pid, oid, j, at)
            rows_res.append(
                {
                    "pk": rpk,
                    "resource_type": "Observation",
                    "resource_id": oid,
                    "version_id": 1,
                    "current_version_pk": vpk,
                    "last_updated": now,
                    "deleted": False,
                }
            )
            rows_ver.append(
                {
                    "pk": vpk,
                    "resource_pk": rpk,
                    "resource_type": "Observation",
                    "resource_id": oid,
                    "version_id": 1,
                    "last_updated": now,
                    "superseded_by": None,
                    "deleted": False,
                    "method": "POST",
                    "content": jsonio.dumps(body),
                }
            )
            for param in ("patient", "subject"):
                rows_ref.append(
                    {
                        "version_pk": vpk,
                        "resource_type": "Observation",
                        "param": param,
                        "target_type": "Patient",
                        "target_id": pid,
                        "reference": f"Patient/{pid}",
                    }
                )
            done += 1
            if len(rows_ver) >= BATCH:
                flush()
    if rows_ver:
        flush()
    if rt.engine.dialect.name == "postgresql":
        with rt.engine.begin() as conn:
            for table in ("resource", "resource_version"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), "
                        f"(SELECT max(pk) FROM {table}))"
                    )
                )
            conn.execute(text("ANALYZE"))


def queue_export(url: str, level: str) -> str:
    """Queue one export through the service; returns its job id."""
    from fhir_bridge.fhir.bulk_request import ExportRequest
    from fhir_bridge.security.principal import Principal
    from fhir_bridge.security.scopes import parse_scopes
    from fhir_bridge.services.bulk_export import kick_off
    from fhir_bridge.services.runtime import build_runtime

    rt = build_runtime(Settings(database_url=url))
    try:
        scopes = tuple(parse_scopes("system/*.rs"))
        if level == "group":
            who = Principal("bench-payer", "payer", f"Organization/{PAYERS[0]}", scopes)
            request = ExportRequest("group", group_id=PAYERS[0])
        else:
            who = Principal("bench-admin", "admin", None, scopes)
            request = ExportRequest("system")
        return kick_off(rt, who, request, f"bench://{level}/$export")
    finally:
        rt.dispose()


def run_export(url: str, export_dir: Path) -> tuple[float, float]:
    """Run the queued job in a runner process: (seconds, peak RSS in MB of that process)."""
    env = {
        **os.environ,
        "FHIR_BRIDGE_DATABASE_URL": url,
        "FHIR_BRIDGE_EXPORT_DIR": str(export_dir),
        "FHIR_BRIDGE_LOG_LEVEL": "WARNING",
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from fhir_bridge.cli import main; main()", "export", "run-once"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (KB on Linux)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the export runner failed ({proc.returncode})")
    return seconds, usage.ru_maxrss / 1024


def exported_lines(export_dir: Path) -> int:
    """Lines in the listed (completed) files."""
    total = 0
    for path in export_dir.glob("*/*.ndjson"):
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                total += chunk.count(b"\n")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--level", choices=("system", "group"), default="system")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend}")
        url = database_url(backend, args.patients, args.resources)
        stored = seed(url, args.patients, args.resources)
        rates, peaks, lines = [], [], 0
        for _ in range(args.repeats):
            export_dir = Path(tempfile.mkdtemp(prefix="bench-export-"))
            try:
                queue_export(url, args.level)
                seconds, peak = run_export(url, export_dir)
                lines = exported_lines(export_dir)
                rates.append(lines / seconds)
                peaks.append(peak)
            finally:
                shutil.rmtree(export_dir, ignore_errors=True)
        print(
            f"{backend:10s} level={args.level} stored={stored:,} exported={lines:,} "
            f"median {statistics.median(rates):,.0f} resources/s, runner peak RSS median "
            f"{statistics.median(peaks):.0f} MB, max {max(peaks):.0f} MB ({args.repeats} run(s))"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
