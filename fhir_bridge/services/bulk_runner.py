"""The export runner: the worker's loop that claims ``$export`` jobs and writes NDJSON files.

A claimed job is read as of the store's write sequence fixed at its first claim (its
``transactionTime``), one type at a time, in keyset pages under the caller's access policy,
each page appended to ``<type>-<attempt>.ndjson.part``. Only when every type is written are the
files renamed and listed, in the transaction that marks the job complete, and only if the
lease is still ours. A killed worker leaves ``.part`` files and a running job whose lease
runs out: the next claim deletes the folder and starts again, so no file is ever partial and
no line repeated. Cancelled and expired jobs lose their folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import event

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.bulk_request import ExportRequest
from fhir_bridge.fhir.outcome import error, operation_outcome
from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.logs import safe_trace
from fhir_bridge.services.access_policy import read_scope
from fhir_bridge.services.authorization import utcnow
from fhir_bridge.services.bulk_export import expiry, job_dir, principal_from_json
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store import export_jobs as jobs
from fhir_bridge.store.db import make_engine, read_session, session_factory, write_session
from fhir_bridge.store.export_read import ExportMembers, ExportSlice, export_page
from fhir_bridge.store.snapshot import current_sequence

log = logging.getLogger(__name__)


def _export_runtime(runtime: Runtime) -> Runtime:
    """On SQLite, connections of the runner's own, without the store's memory-mapped reads
    and large page cache (both count in the process's memory, and an export reads every
    page once); on PostgreSQL the runtime as it is."""
    if not runtime.settings.is_sqlite:
        return runtime
    engine = make_engine(runtime.settings.database_url)

    @event.listens_for(engine, "connect")
    def _small(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA mmap_size=0")
        cursor.execute("PRAGMA cache_size=-8192")
        cursor.close()

    return Runtime(runtime.settings, engine, session_factory(engine))


class LeaseLost(Exception):
    """The job was cancelled or taken over: stop writing, list nothing."""


@dataclass
class _Claim:
    pk: int
    job_id: str
    attempt: int
    lease: datetime
    snapshot: int
    principal: str
    params: str


class ExportRunner:
    """Runs export jobs of one store; ``run_once`` runs one job, ``run_forever`` until stopped."""

    def __init__(
        self, runtime: Runtime, *, clock: Callable[[], datetime] = utcnow, idle: float = 1.0
    ) -> None:
        self._shared = runtime
        self.runtime = _export_runtime(runtime)
        self.settings = runtime.settings
        self.clock = clock
        self.idle = idle

    def close(self) -> None:
        """Close the runner's own SQLite connections (PostgreSQL shares the runtime's pool)."""
        if self.runtime is not self._shared:
            self.runtime.dispose()

    # --- the loop ------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        """Claim and run jobs until ``stop`` is set (errors are logged, never fatal)."""
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:  # the loop must outlive a database outage
                log.error(
                    "export runner cycle failed",
                    extra={"error_type": type(exc).__name__, "trace": safe_trace(exc)},
                )
                worked = False
            if not worked:
                stop.wait(self.idle)

    def run_once(self) -> bool:
        """Remove expired exports, then claim and run one job; False when none was due."""
        self.purge_expired()
        claim = self._claim()
        if claim is None:
            return False
        folder = job_dir(self.runtime, claim.job_id)
        shutil.rmtree(folder, ignore_errors=True)  # an earlier attempt's files, if any
        folder.mkdir(parents=True, exist_ok=True)
        try:
            files = self._run(claim, folder)
            with write_session(self.runtime.sessions) as session:
                now = self.clock()
                until = now + expiry(self.runtime)
                done = jobs.complete(
                    session, claim.pk, claim.lease, files, now=now, expires_at=until
                )
            if not done:
                raise LeaseLost
        except LeaseLost:
            shutil.rmtree(folder, ignore_errors=True)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            log.error(
                "export failed",
                extra={"error_type": type(exc).__name__, "trace": safe_trace(exc)},
            )
            outcome = operation_outcome(
                [error("exception", f"The export failed ({type(exc).__name__}); try again")]
            )
            with write_session(self.runtime.sessions) as session:
                now = self.clock()
                jobs.fail(
                    session,
                    claim.pk,
                    claim.lease,
                    json.dumps(outcome),
                    now=now,
                    expires_at=now + expiry(self.runtime),
                )
        return True

    def purge_expired(self) -> int:
        """Delete the folders and rows of expired (and cancelled) jobs; returns how many."""
        with write_session(self.runtime.sessions) as session:
            found = jobs.expired(session, self.clock())
            for _pk, job_id in found:
                shutil.rmtree(job_dir(self.runtime, job_id), ignore_errors=True)
            jobs.remove(session, [pk for pk, _ in found])
        return len(found)

    # --- one job -------------------------------------------------------------------------

    def _lease_until(self) -> datetime:
        return self.clock() + timedelta(seconds=self.settings.export_lease_seconds)

    def _claim(self) -> _Claim | None:
        with write_session(self.runtime.sessions) as session:
            job = jobs.claim(
                session, now=self.clock(), lease_seconds=self.settings.export_lease_seconds
            )
            if job is None:
                return None
            assert job.lease_until is not None
            if job.snapshot is None:
                snapshot = current_sequence(session)
                jobs.set_snapshot(session, job.pk, job.lease_until, snapshot, self.clock())
            else:
                snapshot = job.snapshot
            return _Claim(
                job.pk,
                job.job_id,
                job.attempts,
                job.lease_until,
                snapshot,
                job.principal,
                job.params,
            )

    def _renew(self, claim: _Claim, progress: str) -> None:
        new_lease = self._lease_until()
        with write_session(self.runtime.sessions) as session:
            if not jobs.renew(session, claim.pk, claim.lease, new_lease, progress[:128]):
                raise LeaseLost
        claim.lease = new_lease

    def _run(self, claim: _Claim, folder: Path) -> list[jobs.NewFile]:
        request = ExportRequest.from_json(json.loads(claim.params))
        principal = principal_from_json(claim.principal)
        scope = read_scope(principal)
        files: list[jobs.NewFile] = []
        refused: list[str] = []
        members = ExportMembers()  # a payer's member patients, read once per export
        types = request.export_types()
        for n, rtype in enumerate(types):
            if not scope.reads(rtype):
                if request.types is not None:
                    refused.append(rtype)
                continue
            filters = tuple(
                parse_search(rtype, parse_qsl(qs, keep_blank_values=True))
                for qs in request.type_filters.get(rtype, ())
            )
            piece = ExportSlice(
                rtype,
                scope,
                claim.snapshot,
                since=request.since,
                filters=filters,
                group_org=request.group_id if request.level == "group" else None,
            )
            label = f"{rtype} ({n + 1} of {len(types)})"
            found = self._write_type(claim, folder, piece, label, members)
            if found is not None:
                files.append(found)
        if refused:
            files.append(self._write_refusals(claim, folder, refused))
        for f in files:
            (folder / f"{f.name}.part").rename(folder / f.name)
        return files

    def _write_type(
        self,
        claim: _Claim,
        folder: Path,
        piece: ExportSlice,
        label: str,
        members: ExportMembers,
    ) -> jobs.NewFile | None:
        name = f"{piece.resource_type}-{claim.attempt}.ndjson"
        part = folder / f"{name}.part"
        count, after, patients = 0, 0, set()
        page_size = self.settings.export_page_size
        renew_every = self.settings.export_lease_seconds / 3
        last_renewal = time.monotonic()
        with part.open("wb", buffering=1 << 20) as out:
            while True:
                with read_session(self.runtime.sessions) as session:
                    rows, last = export_page(session, piece, after, page_size, members)
                if last is None:
                    break
                if rows:
                    out.write(b"\n".join(content for _, content, _ in rows))
                    out.write(b"\n")
                count += len(rows)
                after = last
                patients.update(p for _, _, p in rows if p)
                if time.monotonic() - last_renewal >= renew_every:
                    self._renew(claim, f"{label}: {count} resources")
                    last_renewal = time.monotonic()
        if count == 0:
            part.unlink()
            return None
        self._renew(claim, f"{label}: {count} resources")
        return jobs.NewFile(
            "output", piece.resource_type, name, count, json.dumps(sorted(patients))
        )

    def _write_refusals(self, claim: _Claim, folder: Path, refused: list[str]) -> jobs.NewFile:
        name = f"OperationOutcome-{claim.attempt}.ndjson"
        lines = [
            jsonio.dumps(
                operation_outcome(
                    [
                        error(
                            "forbidden",
                            f"{rtype} was not exported: the access token's scopes do not "
                            "allow reading it",
                            "_type",
                        )
                    ]
                )
            )
            for rtype in refused
        ]
        (folder / f"{name}.part").write_bytes(b"\n".join(lines) + b"\n")
        return jobs.NewFile("error", "OperationOutcome", name, len(lines), "[]")
