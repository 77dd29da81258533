"""The delivery queue: workers claim due rows under a lease, then record what happened.

Rules the queries keep:

* **Order per patient and partner.** Only the oldest *pending* row of its (partner, patient)
  may be claimed, so a patient's events reach a partner in outbox order; a row in flight (or
  waiting for its retry) holds back the later ones. Dead rows do not block: a dead letter
  must not stop a patient's later events forever (a requeued dead row may then arrive after
  newer ones). Rows without a patient are independent of each other.
* **Fairness.** A claim takes at most ``per_partner`` rows of any one partner, round-robin
  (each partner's first row, then each one's second ...), so a dead partner's backlog cannot
  fill every batch and starve a live one.
* **One claimer.** On PostgreSQL the chosen rows are locked ``FOR UPDATE SKIP LOCKED`` and
  re-checked, so concurrent workers never take the same row. SQLite serialises writers
  (``BEGIN IMMEDIATE`` in ``write_session``) and the bridge runs one worker there.
* **Leases.** A claim sets ``lease_until``; after it another worker may take the row again
  (a crashed worker's rows come back). The lease value is the claim's fencing token: the
  recording functions accept ``lease=`` and then change the row only while it is still ours.

Every function runs in the caller's transaction (use ``write_session``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from fhir_bridge.store.models import Delivery, Partner

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
DEFAULT_PER_PARTNER = 5


@dataclass(frozen=True)
class Job:
    """What the worker needs of a claimed row (not the full row: see ``store.deliveries``)."""

    pk: int
    partner_pk: int
    patient_id: str | None
    event_type: str
    status: str
    attempts: int
    created_at: datetime
    lease_until: datetime | None
    payload: bytes | None


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(
        Delivery.status == PENDING,
        Delivery.next_attempt_at <= now,
        or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),
    )


def _is_head() -> ColumnElement[bool]:
    """No older pending row of the same partner and patient (NULL patients never match)."""
    earlier = aliased(Delivery)
    return ~exists().where(
        earlier.partner_pk == Delivery.partner_pk,
        earlier.patient_id == Delivery.patient_id,
        earlier.status == PENDING,
        earlier.pk < Delivery.pk,
    )


def claim(
    session: Session,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    limit: int,
    dialect: str | None = None,
    per_partner: int = DEFAULT_PER_PARTNER,
) -> list[int]:
    """Lease up to ``limit`` due rows for ``worker_id``; their pks in the order to send them.

    ``worker_id`` is not stored (the table has no owner column): the lease value is the token.
    ``dialect`` defaults to the session's ("postgresql" locks with SKIP LOCKED).
    """
    if limit <= 0:
        return []
    dialect = dialect or session.get_bind().dialect.name
    rank = (
        func.row_number()
        .over(partition_by=Delivery.partner_pk, order_by=(Delivery.next_attempt_at, Delivery.pk))
        .label("rank")
    )
    heads = (
        select(Delivery.pk, Delivery.next_attempt_at, rank)
        .join(Partner, Partner.pk == Delivery.partner_pk)
        .where(_due(now), Partner.enabled.is_(True), _is_head())
        .subquery()
    )
    candidates = list(
        session.execute(
            select(heads.c.pk)
            .where(heads.c.rank <= per_partner)
            .order_by(heads.c.rank, heads.c.next_attempt_at, heads.c.pk)
            .limit(limit)
        ).scalars()
    )
    if not candidates:
        return []
    if dialect == "postgresql":
        # window functions cannot be locked: lock the chosen rows now, re-checking that they
        # are still due (PostgreSQL re-evaluates the WHERE on a row another worker changed)
        locked = set(
            session.execute(
                select(Delivery.pk)
                .where(Delivery.pk.in_(candidates), _due(now))
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        candidates = [pk for pk in candidates if pk in locked]
        if not candidates:
            return []
    session.execute(
        update(Delivery)
        .where(Delivery.pk.in_(candidates))
        .values(lease_until=lease_deadline(now, lease_seconds))
    )
    return candidates


def lease_deadline(now: datetime, lease_seconds: float) -> datetime:
    """The ``lease_until`` a claim at ``now`` sets (the fencing token of that claim)."""
    return now + timedelta(seconds=lease_seconds)


def job(session: Session, pk: int) -> Job | None:
    """The worker's view of one row."""
    row = session.get(Delivery, pk)
    if row is None:
        return None
    return Job(
        pk=row.pk,
        partner_pk=row.partner_pk,
        patient_id=row.patient_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        lease_until=row.lease_until,
        payload=row.payload,
    )


def _ours(pk: int, lease: datetime | None) -> ColumnElement[bool]:
    held = and_(Delivery.pk == pk, Delivery.status == PENDING)
    return held if lease is None else and_(held, Delivery.lease_until == lease)


def _record_attempt(
    session: Session,
    pk: int,
    lease: datetime | None,
    *,
    now: datetime,
    status_code: int | None,
    **values: object,
) -> bool:
    """Count one attempt on a row we still hold and release it; False when it is not ours."""
    result = session.execute(
        update(Delivery)
        .where(_ours(pk, lease))
        .values(
            attempts=Delivery.attempts + 1,
            lease_until=None,
            last_attempt_at=now,
            last_status=status_code,
            **values,
        )
    )
    return bool(result.rowcount)


def complete(
    session: Session,
    pk: int,
    *,
    now: datetime,
    status_code: int | None,
    lease: datetime | None = None,
) -> bool:
    """The partner took it: delivered. False when the row is no longer ours (or not pending)."""
    return _record_attempt(
        session,
        pk,
        lease,
        now=now,
        status_code=status_code,
        status=DELIVERED,
        last_error=None,
        outcome=None,
        delivered_at=now,
    )


def retry_later(
    session: Session,
    pk: int,
    *,
    now: datetime,
    next_at: datetime,
    status_code: int | None,
    error: str | None,
    outcome: str | None = None,
    lease: datetime | None = None,
) -> bool:
    """A failure worth another try at ``next_at``; the lease is released."""
    return _record_attempt(
        session,
        pk,
        lease,
        now=now,
        status_code=status_code,
        next_attempt_at=next_at,
        last_error=error,
        outcome=outcome,
    )


def dead(
    session: Session,
    pk: int,
    *,
    now: datetime,
    status_code: int | None,
    error: str | None,
    outcome: str | None,
    lease: datetime | None = None,
) -> bool:
    """A dead letter: the partner refused it, or it failed for too long. Kept for ``requeue``."""
    return _record_attempt(
        session,
        pk,
        lease,
        now=now,
        status_code=status_code,
        status=DEAD,
        last_error=error,
        outcome=outcome,
    )


def release(session: Session, pks: Sequence[int], *, lease: datetime) -> int:
    """Give back rows claimed with ``lease`` but not attempted (no attempt is counted)."""
    if not pks:
        return 0
    result = session.execute(
        update(Delivery)
        .where(Delivery.pk.in_(list(pks)), Delivery.status == PENDING)
        .where(Delivery.lease_until == lease)
        .values(lease_until=None)
    )
    return int(result.rowcount)


def _requeue_values(now: datetime | None) -> dict[str, object]:
    values: dict[str, object] = {"status": PENDING, "lease_until": None, "attempts": 0}
    if now is not None:
        values["next_attempt_at"] = now
    return values


def requeue_dead(
    session: Session, *, partner_pk: int | None = None, now: datetime | None = None
) -> int:
    """Put dead letters (of one partner, or all) back in the queue; how many.

    Attempts restart at 0 (a requeued row gets a fresh run of tries); ``last_*`` and
    ``outcome`` stay until the next attempt. ``now`` makes them due at once.
    """
    query = update(Delivery).where(Delivery.status == DEAD)
    if partner_pk is not None:
        query = query.where(Delivery.partner_pk == partner_pk)
    return int(session.execute(query.values(**_requeue_values(now))).rowcount)


def requeue(session: Session, pk: int, *, now: datetime | None = None) -> bool:
    """Put one dead letter back in the queue; False when the row is not dead (or missing)."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.pk == pk, Delivery.status == DEAD)
        .values(**_requeue_values(now))
    )
    return bool(result.rowcount)


def store_payload(session: Session, pk: int, payload_bytes: bytes) -> bytes:
    """Fix the Bundle a row sends: the first stored payload wins; returns the one stored.

    Retries (and a second worker after a lease expired) resend these same bytes.
    """
    session.execute(
        update(Delivery)
        .where(Delivery.pk == pk, Delivery.payload.is_(None))
        .values(payload=payload_bytes)
    )
    stored = session.execute(select(Delivery.payload).where(Delivery.pk == pk)).scalar_one()
    assert stored is not None
    return stored


# -- the operator's view (internal API): everything but the payload ------------------------


@dataclass(frozen=True)
class DeliveryView:
    """A delivery as the operator sees it: attempts, last result, timings; never the payload."""

    pk: int
    partner_key: str
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
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class DeliveryFilter:
    """Filters of the delivery list; None means any. Newest first, ``before_pk`` pages."""

    partner_key: str | None = None
    status: str | None = None
    patient_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    before_pk: int | None = None
    limit: int = 50


_VIEW_COLUMNS = (
    Delivery.pk,
    Partner.key,
    Delivery.outbox_pk,
    Delivery.event_type,
    Delivery.patient_id,
    Delivery.status,
    Delivery.attempts,
    Delivery.next_attempt_at,
    Delivery.lease_until,
    Delivery.last_attempt_at,
    Delivery.last_status,
    Delivery.last_error,
    Delivery.outcome,
    Delivery.created_at,
    Delivery.delivered_at,
)


def _view_query() -> Select[Any]:
    return select(*_VIEW_COLUMNS).join(Partner, Partner.pk == Delivery.partner_pk)


def list_deliveries(session: Session, where: DeliveryFilter) -> list[DeliveryView]:
    """Deliveries matching ``where``, newest first (keyset paging on ``pk``)."""
    query = _view_query()
    if where.partner_key is not None:
        query = query.where(Partner.key == where.partner_key)
    if where.status is not None:
        query = query.where(Delivery.status == where.status)
    if where.patient_id is not None:
        query = query.where(Delivery.patient_id == where.patient_id)
    if where.event_type is not None:
        query = query.where(Delivery.event_type == where.event_type)
    if where.since is not None:
        query = query.where(Delivery.created_at >= where.since)
    if where.before_pk is not None:
        query = query.where(Delivery.pk < where.before_pk)
    rows = session.execute(query.order_by(Delivery.pk.desc()).limit(where.limit))
    return [DeliveryView(*row) for row in rows]


def get_delivery(session: Session, pk: int) -> DeliveryView | None:
    """One delivery's view."""
    row = session.execute(_view_query().where(Delivery.pk == pk)).one_or_none()
    return None if row is None else DeliveryView(*row)
