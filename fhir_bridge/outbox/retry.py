"""What a delivery attempt leads to: delivered, retry at a time, or give up (pure).

``RetryPolicy.decide(attempt, result, now)`` is the whole decision the worker used to make
inline: a 2xx is ``Delivered``; a refusal (``dead``: any other 4xx, a 401 a fresh token did not
cure) is ``GiveUp`` with the partner's reason; a retryable failure (network, 408/425/429/5xx,
no token, a payload that could not be built) is ``Retry(at)`` after exponential backoff with
full jitter, never sooner than a ``Retry-After`` asks (capped at ``max_retry_after``), unless
the delivery has been failing for ``max_age`` since its first failed attempt: then ``GiveUp``.
Time a row waited before its first attempt does not count.

The jitter is injected (``jitter(ceiling) -> seconds``), so the policy is a pure function of its
inputs; the default draws uniformly from ``[0, ceiling]`` with its own ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

#: the bridge's policy: first retry within 10 s, at most an hour apart, give up after 72 h
DEFAULT_BASE = 10.0
DEFAULT_CAP = 3600.0
DEFAULT_MAX_AGE = timedelta(hours=72)
#: a Retry-After beyond this is read as this (a partner cannot park a row for weeks)
MAX_RETRY_AFTER = 24 * 3600.0
#: exponent beyond which ``base * 2**n`` is past any sensible cap (and before float overflow)
_MAX_EXPONENT = 60


class AttemptResult(Protocol):
    """What the sender reports (``exchange.sender.SendResult`` is one)."""

    @property
    def outcome(self) -> str:
        """delivered | retry | dead."""
        ...

    @property
    def error(self) -> str | None:
        """A short PHI-free reason."""
        ...

    @property
    def retry_after(self) -> float | None:
        """Seconds a ``Retry-After`` asked for."""
        ...


@dataclass(frozen=True)
class Attempt:
    """The attempt just made: its number (1 = the first) and when the delivery first failed
    (None when this is its first failure)."""

    number: int
    first_failed_at: datetime | None = None


@dataclass(frozen=True)
class Delivered:
    """The partner has it."""


@dataclass(frozen=True)
class Retry:
    """Try again at ``at`` (naive UTC, like ``now``)."""

    at: datetime


@dataclass(frozen=True)
class GiveUp:
    """A dead letter, for ``reason`` (PHI-free)."""

    reason: str | None


Decision = Delivered | Retry | GiveUp


def _uniform(rng: random.Random) -> Callable[[float], float]:
    return lambda ceiling: rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff ``base`` doubling per attempt up to ``cap`` seconds; give up ``max_age`` after
    the first failed attempt; see the module docstring."""

    base: float = DEFAULT_BASE
    cap: float = DEFAULT_CAP
    max_age: timedelta = DEFAULT_MAX_AGE
    max_retry_after: float = MAX_RETRY_AFTER
    jitter: Callable[[float], float] = field(
        default_factory=lambda: _uniform(random.Random()), compare=False
    )

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap <= 0:
            raise ValueError("base and cap must be positive")

    def decide(self, attempt: Attempt, result: AttemptResult, now: datetime) -> Decision:
        """What ``result`` of ``attempt``, reported at ``now``, leads to."""
        if result.outcome == "delivered":
            return Delivered()
        if result.outcome == "dead":
            return GiveUp(result.error)
        if self.expired(attempt, now):
            return GiveUp(f"gave up after {self.max_age}: {result.error}")
        return Retry(now + timedelta(seconds=self.delay(attempt.number, result.retry_after)))

    def expired(self, attempt: Attempt, now: datetime) -> bool:
        """True when the delivery has been failing for ``max_age`` or longer since its first
        failed attempt (not since it was queued); naive times are UTC."""
        first = attempt.first_failed_at or now
        return _utc(now) - _utc(first) >= self.max_age

    def delay(self, number: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``number``: jittered backoff, at least the
        ``Retry-After`` (capped at ``max_retry_after``). Full jitter: the jitter draws from
        ``[0, min(cap, base * 2**(number-1))]``, so rows failing together come back apart."""
        exponent = min(max(number, 1) - 1, _MAX_EXPONENT)
        ceiling = min(self.cap, self.base * 2.0**exponent)
        delay = self.jitter(ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


def _utc(value: datetime) -> datetime:
    """An aware datetime; naive values are taken to be UTC (the store's convention)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
