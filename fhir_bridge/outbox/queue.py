"""The delivery queue: workers claim due rows under a lease, then record what happened.

Rules the queries keep:

* **Order per patient and partner.** Only the oldest *pending* row of its (partner, patient)
  may be claimed, so a patient's events reach a partner in outbox order; a row in flight (or
  waiting for its retry) holds back the later ones. Dead rows do not block: a dead letter
  must not stop a patient's later events forever (a requeued dead row may then arrive after
  newer ones). Rows without a patient are independent of each other.
* **Fairness.** A claim fills its batch round-robin over partners (each partner's first row,
  then each one's second ...), taking at most ``per_partner`` rows of any one partner (the
  worker's default: the whole batch), so a dead partner's backlog cannot crowd out a live
  one: every partner with a due row has a place in every claim (while there are no more
  partners than the batch size).
* **One claimer.** On PostgreSQL the chosen rows are locked ``FOR UPDATE SKIP LOCKED`` and
  re-checked, so concurrent workers never take the same row. SQLite serialises writers
  (``BEGIN IMMEDIATE`` in ``write_session``) and the bridge runs one worker there.
* **Leases.** A claim sets ``lease_until``; after it another worker may take the row again
  (a crashed worker's rows come back). The lease value is the claim's fencing token: the
  recording functions accept ``lease=`` and then change the row only while it is still ours.

Every function runs in the caller's transaction (use ``write_session``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session, aliased

from fhir_bridge.store.deliveries import DeliveryRow, rows_with_payload
from fhir_bridge.store.models import Delivery, DeliveryStatus, Partner

PENDING, DELIVERED, DEAD = DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.DEAD
DEFAULT_PER_PARTNER = 5


#: the worker's view of a claimed row: the one delivery value type, with its payload read
Job = DeliveryRow


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
    heads = _partner_heads(session, now=now, per_partner=per_partner, dialect=dialect)
    # round-robin: every partner's first head, then every partner's second ... (oldest first)
    ranked = sorted(
        (rank, due_at, pk) for rows in heads.values() for rank, (pk, due_at) in enumerate(rows)
    )
    candidates = [pk for _rank, _due_at, pk in ranked[:limit]]
    if not candidates:
        return []
    if dialect == "postgresql":
        # the heads query (LIMIT per partner) is not locked: lock the chosen rows now, checking they
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


def _partner_heads(
    session: Session, *, now: datetime, per_partner: int, dialect: str
) -> dict[int, list[tuple[int, datetime]]]:
    """Each enabled partner's first ``per_partner`` due heads as (pk, next_attempt_at), oldest
    first. Read per partner through ``(partner_pk, status, next_attempt_at, pk)`` and stopped
    at the limit, so a claim's cost does not grow with the backlog (a window over every due
    row did): PostgreSQL in one LATERAL query, SQLite (in-process) one query per partner.
    """

    def heads_of(partner: Any) -> Select[Any]:
        return (
            select(Delivery.pk, Delivery.next_attempt_at)
            .where(Delivery.partner_pk == partner, _due(now), _is_head())
            .order_by(Delivery.next_attempt_at, Delivery.pk)
            .limit(per_partner)
        )

    enabled = select(Partner.pk).where(Partner.enabled.is_(True))
    found: dict[int, list[tuple[int, datetime]]] = {}
    if dialect == "postgresql":
        lateral = heads_of(Partner.pk).lateral("heads")
        rows = session.execute(
            select(Partner.pk, lateral.c.pk, lateral.c.next_attempt_at)
            .select_from(Partner)
            .join(lateral, true())
            .where(Partner.enabled.is_(True))
        )
        for partner_pk, pk, due_at in rows:
            found.setdefault(partner_pk, []).append((pk, due_at))
        for rows_of in found.values():
            rows_of.sort(key=lambda r: (r[1], r[0]))
        return found
    for partner_pk in session.execute(enabled).scalars():
        rows_of = [(pk, due_at) for pk, due_at in session.execute(heads_of(partner_pk))]
        if rows_of:
            found[partner_pk] = rows_of
    return found


def lease_deadline(now: datetime, lease_seconds: float) -> datetime:
    """The ``lease_until`` a claim at ``now`` sets (the fencing token of that claim)."""
    return now + timedelta(seconds=lease_seconds)


def jobs(session: Session, pks: Sequence[int]) -> dict[int, Job]:
    """The worker's view of these rows (one query, payloads included), by pk; missing rows
    are left out."""
    return rows_with_payload(session, pks)


def job(session: Session, pk: int) -> Job | None:
    """The worker's view of one row."""
    return jobs(session, [pk]).get(pk)


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
    return not complete_many(session, [(pk, now, status_code)], lease=lease)


_COLUMNS = Delivery.__table__.c
#: one row delivered (executed for many rows at once: see ``complete_many``)
_COMPLETE_ONE = (
    update(Delivery.__table__)
    .where(_COLUMNS.pk == bindparam("b_pk"))
    .values(
        attempts=_COLUMNS.attempts + 1,
        lease_until=None,
        last_attempt_at=bindparam("b_at"),
        last_status=bindparam("b_status"),
        status=DELIVERED,
        last_error=None,
        outcome=None,
        delivered_at=bindparam("b_at"),
    )
)


def complete_many(
    session: Session,
    delivered: Sequence[tuple[int, datetime, int | None]],
    *,
    lease: datetime | None = None,
) -> set[int]:
    """``complete`` for several rows, each ``(pk, when, status code)``, in two statements
    (which rows are still ours, then one executemany). Returns the pks no longer ours (the
    lease was lost, or the row is not pending); those are left as they are."""
    if not delivered:
        return set()
    pks = [pk for pk, _, _ in delivered]
    ours = select(Delivery.pk).where(Delivery.pk.in_(pks), Delivery.status == PENDING)
    if lease is not None:
        ours = ours.where(Delivery.lease_until == lease)
    if session.get_bind().dialect.name == "postgresql":
        ours = ours.with_for_update()  # held until the update (SQLite: one writer already)
    held = set(session.scalars(ours))
    rows = [
        {"b_pk": pk, "b_at": at, "b_status": status} for pk, at, status in delivered if pk in held
    ]
    if rows:
        session.connection().execute(_COMPLETE_ONE, rows)
    return set(pks) - held


def _failed(now: datetime) -> dict[str, Any]:
    """A failed attempt starts the give-up clock unless an earlier failure did."""
    return {"first_failed_at": func.coalesce(Delivery.first_failed_at, now)}


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
        **_failed(now),
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
        **_failed(now),
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
    values: dict[str, object] = {
        "status": PENDING,
        "lease_until": None,
        "attempts": 0,
        "first_failed_at": None,
    }
    if now is not None:
        values["next_attempt_at"] = now
    return values


def requeue_dead(
    session: Session, *, partner_pk: int | None = None, now: datetime | None = None
) -> int:
    """Put dead letters (of one partner, or all) back in the queue; how many.

    Attempts restart at 0 and the give-up clock is cleared (a requeued row gets a fresh run
    of tries, given up 72 h after its next first failure); ``last_*`` and
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
    return store_payloads(session, {pk: payload_bytes})[pk]


def store_payloads(session: Session, payloads: Mapping[int, bytes]) -> dict[int, bytes]:
    """``store_payload`` for several rows: one UPDATE per row still without a payload, one
    SELECT of what is stored; returns it by pk (rows that are gone are left out)."""
    if not payloads:
        return {}
    table = Delivery.__table__  # Core, not the ORM's bulk-update-by-primary-key mode
    session.execute(
        update(table)
        .where(table.c.pk == bindparam("row_pk"), table.c.payload.is_(None))
        .values(payload=bindparam("bytes")),
        [{"row_pk": pk, "bytes": data} for pk, data in payloads.items()],
    )
    stored = session.execute(
        select(Delivery.pk, Delivery.payload).where(Delivery.pk.in_(list(payloads)))
    )
    return {pk: data for pk, data in stored if data is not None}
