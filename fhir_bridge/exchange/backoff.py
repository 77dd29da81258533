"""When to try a failed delivery again, and when to stop: pure functions, time passed in.

The defaults are the bridge's policy (10 s base, 1 h cap, give up after 72 h); callers pass
other values (from settings) as parameters.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

DEFAULT_BASE = 10.0
DEFAULT_CAP = 3600.0
DEFAULT_MAX_AGE = timedelta(hours=72)

#: exponent beyond which ``base * 2**n`` is past any sensible cap (and before float overflow)
_MAX_EXPONENT = 60


def next_delay(
    attempt: int,
    *,
    base: float = DEFAULT_BASE,
    cap: float = DEFAULT_CAP,
    rng: random.Random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first failure).

    Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**(attempt-1))]``,
    so many deliveries failing together do not come back together.
    """
    if base <= 0 or cap <= 0:
        raise ValueError("base and cap must be positive")
    exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
    ceiling = min(cap, base * 2.0**exponent)
    return rng.uniform(0.0, ceiling)


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


def given_up(
    first_failed_at: datetime, now: datetime, *, max_age: timedelta = DEFAULT_MAX_AGE
) -> bool:
    """True when a delivery has been failing for ``max_age`` or longer since its first failed
    attempt (not since it was queued): make it a dead letter."""
    return _utc(now) - _utc(first_failed_at) >= max_age
