"""Named secrets every process of one store shares (``signing_key`` rows), made on first use."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_bridge.store.models import SigningKey


def named_secret(session: Session, name: str, *, now: datetime) -> str:
    """The secret called ``name``: the first caller makes it, a concurrent one reads it."""
    found = session.scalar(select(SigningKey.secret).where(SigningKey.name == name))
    if found:
        return found
    try:
        with session.begin_nested():
            session.execute(
                insert(SigningKey).values(
                    name=name, secret=secrets.token_urlsafe(48), created_at=now
                )
            )
    except IntegrityError:
        pass  # another process made it first
    return session.scalar(select(SigningKey.secret).where(SigningKey.name == name))
