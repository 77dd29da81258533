"""Read queries the clinic console needs and the other repositories do not offer.

Plain values out (the existing row types); each query is bounded by a ``limit`` and served by
an index (``clinic_session.updated_at`` is indexed by migration 0008 for this).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from fhir_bridge.store.deliveries import DeliveryRow, DeliveryStore
from fhir_bridge.store.models import ClinicSession, Delivery, DeliveryStatus, OutboxEvent, Referral
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.sessions import SessionStore, StoredSession

#: referral statuses in which visits are still being given
OPEN_REFERRAL_STATUSES = ("accepted", "in-progress")


def sessions_documented_since(session: Session, since: datetime, limit: int) -> list[StoredSession]:
    """Sessions received or replaced at or after ``since``, newest first."""
    ids = session.scalars(
        select(ClinicSession.session_id)
        .where(ClinicSession.updated_at >= since)
        .order_by(ClinicSession.updated_at.desc())
        .limit(limit)
    ).all()
    store = SessionStore(session)
    return [s for s in (store.get(i) for i in ids) if s is not None]


def count_sessions_documented_since(session: Session, since: datetime) -> int:
    """How many sessions were received or replaced at or after ``since``."""
    return session.scalar(
        select(func.count()).select_from(ClinicSession).where(ClinicSession.updated_at >= since)
    )


def failing_deliveries(session: Session, limit: int) -> list[DeliveryRow]:
    """Dead letters and deliveries that have failed at least once and wait for a retry.

    Two index-served reads merged here (an OR across them would scan the table).
    """
    dead = session.scalars(
        select(Delivery.pk)
        .where(Delivery.status == DeliveryStatus.DEAD)
        .order_by(Delivery.pk.desc())
        .limit(limit)
    ).all()
    retrying = session.scalars(
        select(Delivery.pk)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.first_failed_at.is_not(None))
        .order_by(Delivery.pk.desc())
        .limit(limit)
    ).all()
    pks = sorted({*dead, *retrying}, reverse=True)[:limit]
    store = DeliveryStore(session)
    return [d for d in (store.get(pk) for pk in pks) if d is not None]


def referrals_running_out(
    session: Session, *, expiring_by: date, visits_left_at_most: int, limit: int
) -> list[ReferralRow]:
    """Open referrals that expire by a date or have few prescribed visits left."""
    left = Referral.visits_prescribed - Referral.visits_used
    srids = session.scalars(
        select(Referral.service_request_id)
        .where(
            Referral.status.in_(OPEN_REFERRAL_STATUSES),
            or_(
                and_(Referral.expires_on.is_not(None), Referral.expires_on <= expiring_by),
                and_(Referral.visits_prescribed.is_not(None), left <= visits_left_at_most),
            ),
        )
        .order_by(Referral.expires_on, Referral.pk)
        .limit(limit)
    ).all()
    found = ReferralStore(session).get_many(srids)
    return [found[s] for s in srids if s in found]


def deliveries_of_resource(
    session: Session, resource_type: str, resource_id: str, limit: int = 100
) -> list[DeliveryRow]:
    """Deliveries of the outbox events about one resource (a visit's Procedure), newest first."""
    pks = session.scalars(
        select(Delivery.pk)
        .join(OutboxEvent, OutboxEvent.pk == Delivery.outbox_pk)
        .where(OutboxEvent.resource_type == resource_type, OutboxEvent.resource_id == resource_id)
        .order_by(Delivery.pk.desc())
        .limit(limit)
    ).all()
    store = DeliveryStore(session)
    return [d for d in (store.get(pk) for pk in pks) if d is not None]
