"""Referral rows: the clinic's inbox projection of referral ServiceRequests and their Tasks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from fhir_bridge.store.models import Referral


@dataclass(frozen=True)
class ReferralRow:
    """What the inbox knows of one referral, as plain values."""

    service_request_id: str
    task_id: str
    placer_system: str
    placer_value: str
    status: str
    patient_id: str | None
    patient_match: str
    requester_reference: str | None
    requester_npi: str | None
    authored_on: datetime | None
    visits_prescribed: int | None
    frequency: str | None
    expires_on: date | None
    visits_used: int
    warnings: list[dict[str, Any]]
    received_at: datetime
    updated_at: datetime
    pk: int = 0
    #: id of the Organization whose EHR sent the referral (it keeps seeing it and its Task)
    sender_organization: str | None = None
    #: every re-send that changed it, oldest first: {"at", "by", "version", "changes": [...]}
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def visits_left(self) -> int | None:
        """Prescribed visits not yet documented (never negative); None when no count was given."""
        if self.visits_prescribed is None:
            return None
        return max(self.visits_prescribed - self.visits_used, 0)


@dataclass(frozen=True)
class ReferralFilter:
    """Inbox filters; None means any."""

    status: str | None = None
    patient_id: str | None = None
    requester_npi: str | None = None
    requester_reference: str | None = None
    after_pk: int | None = None
    limit: int = 50
    statuses: tuple[str, ...] = field(default=())


_FIELDS = (
    "task_id",
    "placer_system",
    "placer_value",
    "status",
    "patient_id",
    "patient_match",
    "requester_reference",
    "requester_npi",
    "authored_on",
    "visits_prescribed",
    "frequency",
    "expires_on",
    "visits_used",
    "sender_organization",
)


def _row(r: Referral) -> ReferralRow:
    return ReferralRow(
        service_request_id=r.service_request_id,
        warnings=json.loads(r.warnings),
        changes=json.loads(r.changes) if r.changes else [],
        received_at=r.received_at,
        updated_at=r.updated_at,
        pk=r.pk,
        **{name: getattr(r, name) for name in _FIELDS},
    )


class ReferralStore:
    """Repository of referral rows, bound to the caller's unit of work."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _one(self, *where: Any, for_update: bool = False) -> ReferralRow | None:
        stmt = select(Referral).where(*where)
        if for_update:
            stmt = stmt.with_for_update()
        found = self.session.execute(stmt).scalar_one_or_none()
        return None if found is None else _row(found)

    def get(self, service_request_id: str, *, for_update: bool = False) -> ReferralRow | None:
        """The referral of a ServiceRequest id."""
        return self._one(Referral.service_request_id == service_request_id, for_update=for_update)

    def get_many(self, service_request_ids: Iterable[str]) -> dict[str, ReferralRow]:
        """The referrals of several ServiceRequest ids (those on file), in one query."""
        ids = sorted(set(service_request_ids))
        if not ids:
            return {}
        found = self.session.scalars(select(Referral).where(Referral.service_request_id.in_(ids)))
        return {r.service_request_id: _row(r) for r in found}

    def by_task(self, task_id: str) -> ReferralRow | None:
        """The referral a Task tracks."""
        return self._one(Referral.task_id == task_id)

    def by_placer(self, system: str, value: str) -> ReferralRow | None:
        """The referral with this placer identifier."""
        return self._one(Referral.placer_system == system, Referral.placer_value == value)

    def save(self, row: ReferralRow) -> bool:
        """Insert or replace the row of ``row.service_request_id``; True when it was new."""
        values = {name: getattr(row, name) for name in _FIELDS}
        values["warnings"] = json.dumps(row.warnings, sort_keys=True)
        values["changes"] = json.dumps(row.changes, sort_keys=True) if row.changes else None
        values["updated_at"] = row.updated_at
        result = self.session.execute(
            update(Referral)
            .where(Referral.service_request_id == row.service_request_id)
            .values(**values)
        )
        if result.rowcount:
            return False
        self.session.execute(
            insert(Referral).values(
                service_request_id=row.service_request_id, received_at=row.received_at, **values
            )
        )
        return True

    def list(self, filters: ReferralFilter) -> list[ReferralRow]:
        """Referrals in arrival order, filtered, after a keyset cursor."""
        stmt = select(Referral).order_by(Referral.pk).limit(filters.limit)
        if filters.status is not None:
            stmt = stmt.where(Referral.status == filters.status)
        if filters.statuses:
            stmt = stmt.where(Referral.status.in_(filters.statuses))
        if filters.patient_id is not None:
            stmt = stmt.where(Referral.patient_id == filters.patient_id)
        if filters.requester_npi is not None:
            stmt = stmt.where(Referral.requester_npi == filters.requester_npi)
        if filters.requester_reference is not None:
            stmt = stmt.where(Referral.requester_reference == filters.requester_reference)
        if filters.after_pk is not None:
            stmt = stmt.where(Referral.pk > filters.after_pk)
        return [_row(r) for r in self.session.execute(stmt).scalars()]
