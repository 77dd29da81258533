"""Reading a partner's ``Retry-After`` header (HTTP only; pure, time passed in).

What to do with it (backoff, give-up) is ``outbox.retry.RetryPolicy``'s decision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC (the store's convention)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def retry_after_seconds(header_value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks us to wait (delay-seconds or HTTP-date).

    None when there is no header or it cannot be read; never negative (a date in the past
    means "now").
    """
    if header_value is None:
        return None
    value = header_value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, (_utc(when) - _utc(now)).total_seconds())
