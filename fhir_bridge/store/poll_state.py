"""Pull mode's state: ``_lastUpdated`` cursors (rows of ``outbox_cursor``) and what was seen.

A poll cursor is an ``outbox_cursor`` row named ``poll:<partner key>:<type>`` whose ``last_pk``
holds the highest ``meta.lastUpdated`` taken in, in microseconds since the epoch (UTC). What a
poll took in (or refused) is kept in ``inbound_payload`` like any inbound body; its SHA-256
tells a resource seen again at the cursor boundary from a changed one.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fhir_bridge.store.models import InboundPayload, OutboxCursor


def load_cursor(session: Session, name: str) -> int | None:
    """The cursor's value, None when this poll never advanced it."""
    return session.execute(
        select(OutboxCursor.last_pk).where(OutboxCursor.name == name)
    ).scalar_one_or_none()


def save_cursor(session: Session, name: str, value: int) -> None:
    """Move the cursor forward to ``value`` (never back), creating it when missing."""
    values = {"name": name, "last_pk": value}
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(OutboxCursor).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(OutboxCursor).values(**values).on_conflict_do_nothing()
    session.execute(stmt)
    session.execute(
        update(OutboxCursor)
        .where(OutboxCursor.name == name, OutboxCursor.last_pk < value)
        .values(last_pk=value)
    )


def seen_payload(session: Session, sha256: str, channels: Sequence[str]) -> bool:
    """True when a body with this SHA-256 already came in on one of ``channels``."""
    found = session.execute(
        select(InboundPayload.pk)
        .where(InboundPayload.sha256 == sha256, InboundPayload.channel.in_(list(channels)))
        .limit(1)
    ).first()
    return found is not None
