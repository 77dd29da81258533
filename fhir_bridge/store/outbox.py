"""The transactional outbox: events partners must hear about, written with the change itself.

``OutboxWriter.emit`` runs in the caller's unit of work, so an event exists exactly when the
change that caused it committed. The delivery worker (a consumer of this table) reads events in
``pk`` order; ``pending`` is its minimal read side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
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
)


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
    ) -> None:
        """Record that ``resource`` (this version) changed in a way partners care about."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown outbox event type {event_type!r}")
        self.session.execute(
            insert(OutboxEvent).values(
                created_at=at,
                event_type=event_type,
                resource_type=resource.resource_type,
                resource_id=resource.resource_id,
                version_id=resource.version_id,
                patient_id=patient_id,
                detail=json.dumps(detail or {}, sort_keys=True),
            )
        )

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
