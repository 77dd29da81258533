"""Delivery rows as plain values: enqueueing an outbox event for a partner, and reading rows.

The worker's claim/lease/record functions live in ``outbox.queue``; this module only
creates rows (idempotently: the unique ``(partner_pk, outbox_pk)`` constraint decides) and
reads them back as ``DeliveryRow``, the one read view of a delivery (routing, payload building,
the operator's API and CLI all use it). The payload (the Bundle: PHI) is not part of it:
``DeliveryStore.payload`` reads it when a caller really needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fhir_bridge.store.models import Delivery, DeliveryStatus, Partner
from fhir_bridge.store.outbox import Event

PENDING = DeliveryStatus.PENDING


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery (an outbox event on its way to one partner), plus the partner's key: the
    one value type of a delivery, for the log, the API and the worker (``outbox.queue.Job`` is
    this type). ``payload`` is read only where it is needed (the worker's claim), else None."""

    pk: int
    partner_pk: int
    partner_key: str
    outbox_pk: int
    event_type: str
    patient_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    last_attempt_at: datetime | None
    first_failed_at: datetime | None
    last_status: int | None
    last_error: str | None
    outcome: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: bytes | None = None


#: the columns of ``DeliveryRow`` but the payload, in its field order
_COLUMNS = (
    Delivery.pk,
    Delivery.partner_pk,
    Partner.key,
    Delivery.outbox_pk,
    Delivery.event_type,
    Delivery.patient_id,
    Delivery.status,
    Delivery.attempts,
    Delivery.next_attempt_at,
    Delivery.lease_until,
    Delivery.last_attempt_at,
    Delivery.first_failed_at,
    Delivery.last_status,
    Delivery.last_error,
    Delivery.outcome,
    Delivery.created_at,
    Delivery.delivered_at,
)


def _query(*extra: Any) -> Select[Any]:
    return select(*_COLUMNS, *extra).join(Partner, Partner.pk == Delivery.partner_pk)


def rows_with_payload(session: Session, pks: Sequence[int]) -> dict[int, DeliveryRow]:
    """These rows with their payloads (one query), by pk; missing rows are left out."""
    if not pks:
        return {}
    found = session.execute(_query(Delivery.payload).where(Delivery.pk.in_(list(pks))))
    return {row.pk: DeliveryRow(*row) for row in found}


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
        row = self.session.execute(_query().where(Delivery.pk == pk)).one_or_none()
        return None if row is None else DeliveryRow(*row)

    def payload(self, pk: int) -> bytes | None:
        """The Bundle stored for the delivery (None before its first attempt, or no such row)."""
        return self.session.execute(
            select(Delivery.payload).where(Delivery.pk == pk)
        ).scalar_one_or_none()

    def list(
        self,
        *,
        partner_pk: int | None = None,
        partner_key: str | None = None,
        status: str | None = None,
        patient_id: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        after_pk: int | None = None,
        before_pk: int | None = None,
        newest_first: bool = False,
        limit: int = 50,
    ) -> list[DeliveryRow]:
        """Deliveries in creation order (``pk``; ``newest_first`` reverses it), filtered.

        ``after_pk`` / ``before_pk`` are keyset cursors; ``since`` keeps rows created at or
        after it; ``patient_id`` is a bare Patient id; the partner by row id or key.
        """
        stmt = _query()
        if partner_pk is not None:
            stmt = stmt.where(Delivery.partner_pk == partner_pk)
        if partner_key is not None:
            stmt = stmt.where(Partner.key == partner_key)
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
        if before_pk is not None:
            stmt = stmt.where(Delivery.pk < before_pk)
        stmt = stmt.order_by(Delivery.pk.desc() if newest_first else Delivery.pk).limit(limit)
        return [DeliveryRow(*row) for row in self.session.execute(stmt)]
