"""The audit trail: AuditEvents spooled on local disk at once, stored in batches behind.

``record`` appends one JSON line to this process's spool file (tens of microseconds: the
request it describes is never held up by the database). A flusher moves spooled events into
the store in one transaction per batch; a failed write leaves them spooled for the next try,
and spool files of processes that died are taken over, so an event survives a crash of the
process and an outage of the database. Without a background flusher (tests, commands) each
``record`` flushes at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from fhir_bridge.logs import safe_trace
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.member_scope import patients_of
from fhir_bridge.store.repository import ResourceStore, StoredResource

log = logging.getLogger(__name__)


def patients_disclosed(runtime: Runtime, resources: Sequence[StoredResource]) -> set[str]:
    """The patients whose compartments these resources belong to (for "who saw this patient")."""
    keys = [(r.resource_type, r.resource_id, r.version_pk) for r in resources]
    if all(t == "Patient" for t, _, _ in keys):
        return {rid for _, rid, _ in keys}
    with read_session(runtime.sessions) as session:
        return patients_of(session, keys)


FLUSH_INTERVAL_SECONDS = 0.5
_SPOOL = "audit-{pid}.jsonl"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AuditTrail:
    """Spools AuditEvents and stores them; ``flush`` stores what is spooled now."""

    def __init__(self, runtime: Runtime, spool_dir: Path, *, background: bool = True) -> None:
        self.runtime = runtime
        self.spool_dir = spool_dir
        self.background = background
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._handle: TextIO | None = None
        self._handle_pid = 0

    @property
    def spool_file(self) -> Path:
        """This process's spool (a forked worker gets its own)."""
        return self.spool_dir / _SPOOL.format(pid=os.getpid())

    def record(self, event: dict[str, Any]) -> None:
        """Spool one AuditEvent (never raises); store it now unless a flusher runs."""
        line = json.dumps({**event, "id": uuid.uuid4().hex}, separators=(",", ":")) + "\n"
        try:
            with self._lock:
                handle = self._spool_handle()
                handle.write(line)
                handle.flush()  # into the kernel: it survives this process being killed
        except OSError:
            log.critical("audit spool unwritable; storing the event directly")
            self._store([json.loads(line)])
            return
        if self.background:
            self._ensure_flusher()
        else:
            self.flush()

    def flush(self) -> int:
        """Store every spooled event (this process's and dead processes'); returns how many."""
        stored = 0
        with self._lock:
            self._close_handle()  # the spool is about to be renamed: the next record reopens
            for path in self._claimable():
                # a name of its own: a batch that failed before must not be overwritten
                claimed = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.flushing")
                try:
                    os.replace(path, claimed)
                except FileNotFoundError:
                    continue  # another process took it
                stored += self._store_file(claimed)
            for leftover in sorted(self.spool_dir.glob("*.flushing")):
                owner = leftover.name.split(".")[-3]
                if owner == str(os.getpid()) or (owner.isdigit() and not _alive(int(owner))):
                    stored += self._store_file(leftover)
        return stored

    def _spool_handle(self) -> TextIO:
        """This process's spool, open for appending (reopened after a fork or a flush)."""
        if self._handle is None or self._handle_pid != os.getpid():
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            self._handle = self.spool_file.open("a", encoding="utf-8")
            self._handle_pid = os.getpid()
        return self._handle

    def _close_handle(self) -> None:
        if self._handle is not None and self._handle_pid == os.getpid():
            self._handle.close()
        self._handle = None

    def _claimable(self) -> list[Path]:
        if not self.spool_dir.exists():
            return []
        out = []
        for path in self.spool_dir.glob("audit-*.jsonl"):
            pid = int(path.stem.split("-", 1)[1]) if path.stem.split("-", 1)[1].isdigit() else 0
            if pid == os.getpid() or not _alive(pid):
                out.append(path)
        return out

    def _store_file(self, path: Path) -> int:
        events = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]
        if self._store(events):
            path.unlink()
            return len(events)
        return 0  # kept: the next flush tries again

    def _store(self, events: list[dict[str, Any]]) -> bool:
        if not events:
            return True
        try:
            try:
                with write_session(self.runtime.sessions) as session:
                    ResourceStore(session).bulk_create(events)
            except IntegrityError:
                # stored before a crash kept us from removing the spool: store the rest only
                with write_session(self.runtime.sessions) as session:
                    store = ResourceStore(session)
                    fresh = [e for e in events if store.get("AuditEvent", e["id"]) is None]
                    store.bulk_create(fresh)
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "audit write failed; events stay spooled", extra={"error": type(exc).__name__}
            )
            return False
        return True

    def _ensure_flusher(self) -> None:
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._flusher = threading.Thread(target=self._run, name="audit-flusher", daemon=True)
        self._flusher.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_SECONDS):
            try:
                self.flush()
            except Exception as exc:
                # types and frames only: an error's text may quote the AuditEvents (queries)
                log.error(
                    "audit flush failed",
                    extra={"error_type": type(exc).__name__, "trace": safe_trace(exc)},
                )

    def close(self) -> None:
        """Stop the flusher and store what is spooled."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        self.flush()
