"""Clinic session records: the latest accepted record per session id, and what it produced."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from fhir_bridge.store.models import ClinicSession


@dataclass(frozen=True)
class StoredSession:
    """A session row as plain values."""

    session_id: str
    status: str
    patient_mrn: str
    started_at: datetime
    received_at: datetime
    updated_at: datetime
    record: bytes
    resources: list[dict[str, Any]]
    flags: list[dict[str, str]]
    pk: int


def _stored(row: ClinicSession) -> StoredSession:
    return StoredSession(
        session_id=row.session_id,
        status=row.status,
        patient_mrn=row.patient_mrn,
        started_at=row.started_at,
        received_at=row.received_at,
        updated_at=row.updated_at,
        record=row.record,
        resources=json.loads(row.resources),
        flags=json.loads(row.flags),
        pk=row.pk,
    )


class SessionStore:
    """Repository of clinic session rows, bound to the caller's session (unit of work)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, session_id: str, *, for_update: bool = False) -> StoredSession | None:
        """The session row, optionally locked for the rest of the transaction."""
        stmt = select(ClinicSession).where(ClinicSession.session_id == session_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = self.session.execute(stmt).scalar_one_or_none()
        return None if row is None else _stored(row)

    def save(
        self,
        *,
        session_id: str,
        status: str,
        patient_mrn: str,
        started_at: datetime,
        at: datetime,
        inbound_payload_pk: int,
        record: bytes,
        resources: list[dict[str, Any]],
        flags: list[dict[str, str]],
    ) -> bool:
        """Insert or replace the row; True when it was new."""
        values = {
            "status": status,
            "patient_mrn": patient_mrn,
            "started_at": started_at,
            "updated_at": at,
            "inbound_payload_pk": inbound_payload_pk,
            "record": record,
            "resources": json.dumps(resources),
            "flags": json.dumps(flags),
        }
        result = self.session.execute(
            update(ClinicSession).where(ClinicSession.session_id == session_id).values(**values)
        )
        if result.rowcount:
            return False
        self.session.execute(
            insert(ClinicSession).values(session_id=session_id, received_at=at, **values)
        )
        return True

    def list(
        self, *, patient_mrn: str | None, since: datetime | None, after_pk: int | None, limit: int
    ) -> list[StoredSession]:
        """Sessions in arrival order, filtered, after a keyset cursor."""
        stmt = select(ClinicSession).order_by(ClinicSession.pk).limit(limit)
        if patient_mrn is not None:
            stmt = stmt.where(ClinicSession.patient_mrn == patient_mrn)
        if since is not None:
            stmt = stmt.where(ClinicSession.started_at >= since)
        if after_pk is not None:
            stmt = stmt.where(ClinicSession.pk > after_pk)
        return [_stored(r) for r in self.session.execute(stmt).scalars()]
