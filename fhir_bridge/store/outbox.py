"""The transactional outbox: events partners must hear about, written with the change itself.

``OutboxWriter.emit`` runs in the caller's unit of work, so an event exists exactly when the
change that caused it committed. The delivery worker (a consumer of this table) reads events in
``pk`` order; ``pending`` is its minimal read side.

**One event per fact.** An event is about one resource version and one event type; the table
holds one row per such fact (a partial unique index) and ``emit`` inserts or ignores, on SQLite
and PostgreSQL alike. Two serve nodes that write the same visit at once may both get past their
"is this a replay?" check (each read before the other committed); the second ``emit`` then
waits for the first transaction and adds nothing, so partners get the visit once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fhir_bridge.store.models import OutboxEvent
from fhir_bridge.store.repository import StoredResource

#: event types written today (the delivery issue routes them to partners)
EVENT_TYPES = (
    "referral.received",
    "referral.updated",
    "referral.accepted",
    "referral.declined",
    "referral.in-progress",
    "referral.completed",
    "referral.visit-documented",
    "session.documented",
    "report.generated",
)


#: what an event is about: one per fact (``uq_outbox_event_fact``)
FACT_COLUMNS = ("resource_type", "resource_id", "version_id", "event_type")


@dataclass(frozen=True)
class Event:
    """An outbox row as plain values."""

    pk: int
    created_at: datetime
    event_type: str
    resource_type: str
    resource_id: str
    version_id: int
    patient_id: str | None
    detail: dict[str, Any]


class OutboxWriter:
    """Appends events to the outbox inside the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def emit(
        self,
        event_type: str,
        resource: StoredResource,
        *,
        at: datetime,
        patient_id: str | None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Record that ``resource`` (this version) changed in a way partners care about.

        False when that fact already has its event (written by a concurrent or earlier
        transaction): nothing is added.
        """
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown outbox event type {event_type!r}")
        values = {
            "created_at": at,
            "event_type": event_type,
            "resource_type": resource.resource_type,
            "resource_id": resource.resource_id,
            "version_id": resource.version_id,
            "patient_id": patient_id,
            "detail": json.dumps(detail or {}, sort_keys=True),
        }
        table = OutboxEvent.__table__
        row = select(*(literal(v, table.c[k].type) for k, v in values.items()))
        # INSERT ... SELECT ... WHERE NOT EXISTS: a fact already committed costs no id (on
        # PostgreSQL an ignored INSERT still takes one from the sequence, and the router waits
        # at a gap in the ids); ON CONFLICT settles the race of two uncommitted writers.
        same = [table.c[c] == values[c] for c in FACT_COLUMNS]
        row = row.where(~exists().where(*same, table.c.duplicate_of.is_(None)))
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(OutboxEvent)
            .from_select(list(values), row)
            .on_conflict_do_nothing(
                index_elements=list(FACT_COLUMNS), index_where=OutboxEvent.duplicate_of.is_(None)
            )
            .returning(OutboxEvent.pk)
        )
        return self.session.execute(stmt).scalar_one_or_none() is not None

    def pending(self, *, after_pk: int = 0, limit: int = 100) -> list[Event]:
        """Events after ``after_pk`` in write order."""
        rows = self.session.execute(
            select(OutboxEvent)
            .where(OutboxEvent.pk > after_pk)
            .order_by(OutboxEvent.pk)
            .limit(limit)
        ).scalars()
        return [
            Event(
                pk=r.pk,
                created_at=r.created_at,
                event_type=r.event_type,
                resource_type=r.resource_type,
                resource_id=r.resource_id,
                version_id=r.version_id,
                patient_id=r.patient_id,
                detail=json.loads(r.detail),
            )
            for r in rows
        ]
