"""Delivery rows as plain values: enqueueing an outbox event for a partner, and reading rows.

The worker's claim/lease/record functions live in ``store.delivery_queue``; this module only
creates rows (idempotently: the unique ``(partner_pk, outbox_pk)`` constraint decides) and
reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fhir_bridge.store.models import Delivery
from fhir_bridge.store.outbox import Event

PENDING = "pending"


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery (an outbox event on its way to one partner), every column as a value."""

    pk: int
    partner_pk: int
    outbox_pk: int
    event_type: str
    patient_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    outcome: str | None
    payload: bytes | None
    created_at: datetime
    delivered_at: datetime | None


def _row(d: Delivery) -> DeliveryRow:
    return DeliveryRow(
        pk=d.pk,
        partner_pk=d.partner_pk,
        outbox_pk=d.outbox_pk,
        event_type=d.event_type,
        patient_id=d.patient_id,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        lease_until=d.lease_until,
        last_attempt_at=d.last_attempt_at,
        last_status=d.last_status,
        last_error=d.last_error,
        outcome=d.outcome,
        payload=d.payload,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
    )


class DeliveryStore:
    """Repository of delivery rows, bound to the caller's unit of work."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def enqueue(self, partner_pk: int, event: Event, *, now: datetime) -> bool:
        """A pending delivery of ``event`` to the partner, due at ``now``; False if one exists.

        ``INSERT ... ON CONFLICT DO NOTHING`` on the unique (partner, event) pair, so two
        routers racing on the same event make one row and neither fails.
        """
        values: dict[str, Any] = {
            "partner_pk": partner_pk,
            "outbox_pk": event.pk,
            "event_type": event.event_type,
            "patient_id": event.patient_id,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        dialect = self.session.get_bind().dialect.name
        keys = ["partner_pk", "outbox_pk"]
        if dialect == "postgresql":
            stmt: Any = (
                postgresql.insert(Delivery)
                .values(**values)
                .on_conflict_do_nothing(index_elements=keys)
            )
        elif dialect == "sqlite":
            stmt = (
                sqlite.insert(Delivery).values(**values).on_conflict_do_nothing(index_elements=keys)
            )
        else:  # pragma: no cover - the bridge runs on SQLite and PostgreSQL only
            raise NotImplementedError(f"enqueue does not support {dialect}")
        # RETURNING, not rowcount: the ORM's execute does not report DO NOTHING reliably
        return self.session.execute(stmt.returning(Delivery.pk)).scalar_one_or_none() is not None

    def get(self, pk: int) -> DeliveryRow | None:
        """The delivery with this row id."""
        found = self.session.get(Delivery, pk)
        return None if found is None else _row(found)

    def list(
        self,
        *,
        partner_pk: int | None = None,
        status: str | None = None,
        patient_id: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        after_pk: int | None = None,
        limit: int = 50,
    ) -> list[DeliveryRow]:
        """Deliveries in creation order (``pk``), filtered; ``after_pk`` is the keyset cursor.

        ``since`` keeps rows created at or after it; ``patient_id`` is a bare Patient id.
        """
        stmt = select(Delivery).order_by(Delivery.pk).limit(limit)
        if partner_pk is not None:
            stmt = stmt.where(Delivery.partner_pk == partner_pk)
        if status is not None:
            stmt = stmt.where(Delivery.status == status)
        if patient_id is not None:
            stmt = stmt.where(Delivery.patient_id == patient_id)
        if event_type is not None:
            stmt = stmt.where(Delivery.event_type == event_type)
        if since is not None:
            stmt = stmt.where(Delivery.created_at >= since)
        if after_pk is not None:
            stmt = stmt.where(Delivery.pk > after_pk)
        return [_row(d) for d in self.session.execute(stmt).scalars()]
