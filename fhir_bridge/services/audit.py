"""The audit trail: AuditEvents written to the store after the response they describe is sent.

A failed write never fails the request: the event goes to a local spool file (JSON lines) and
the next successful write stores the spooled events first, so none is lost while the disk lasts.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from threading import Lock
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fhir_bridge.services.runtime import Runtime
from fhir_bridge.settings import DEFAULT_INSTANCE_DIR
from fhir_bridge.store.db import write_session
from fhir_bridge.store.repository import ResourceStore

log = logging.getLogger(__name__)
DEFAULT_SPOOL = DEFAULT_INSTANCE_DIR / "audit-spool.jsonl"


class AuditTrail:
    """Writes AuditEvents; spools what the database cannot take right now."""

    def __init__(self, runtime: Runtime, spool: Path = DEFAULT_SPOOL) -> None:
        self.runtime = runtime
        self.spool = spool
        self._lock = Lock()

    def record(self, event: dict[str, Any]) -> None:
        """Store one AuditEvent (never raises)."""
        event = {**event, "id": uuid.uuid4().hex}
        with self._lock:
            pending: list[dict[str, Any]] = []
            try:
                pending = self._take_spool()
                self._store([*pending, event])
            except (SQLAlchemyError, OSError, ValueError) as exc:
                log.error("audit write failed; event spooled", extra={"error": type(exc).__name__})
                self._append_spool([*pending, event])

    def _store(self, events: list[dict[str, Any]]) -> None:
        with write_session(self.runtime.sessions) as session:
            ResourceStore(session).bulk_create(events)

    def _take_spool(self) -> list[dict[str, Any]]:
        if not self.spool.exists():
            return []
        taken = self.spool.with_suffix(f".{os.getpid()}.taking")
        os.replace(self.spool, taken)
        events = [json.loads(line) for line in taken.read_text().splitlines() if line.strip()]
        taken.unlink()
        return events

    def _append_spool(self, events: list[dict[str, Any]]) -> None:
        try:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            with self.spool.open("a", encoding="utf-8") as f:
                for e in events:
                    f.write(json.dumps(e) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            log.critical("audit spool unwritable: %d events lost", len(events))
