"""The delivery retry policy (pure): delivered, retry at a time, or give up, as a table."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from fhir_bridge.exchange.sender import SendResult
from fhir_bridge.outbox.retry import (
    MAX_RETRY_AFTER,
    Attempt,
    Delivered,
    GiveUp,
    Retry,
    RetryPolicy,
)

NOW = datetime(2026, 12, 1, 12, 0, 0)
FULL = RetryPolicy(base=10, cap=3600, max_age=timedelta(hours=72), jitter=lambda ceiling: ceiling)


def after(seconds: float) -> Retry:
    return Retry(NOW + timedelta(seconds=seconds))


FAILED = SendResult("retry", status=503, error="partner answered HTTP 503")
CASES = {
    "2xx": (Attempt(1), SendResult("delivered", status=200), Delivered()),
    "2xx after failures": (
        Attempt(5, NOW - timedelta(hours=80)),
        SendResult("delivered", status=201),
        Delivered(),
    ),
    "refused": (
        Attempt(1),
        SendResult("dead", status=422, error="partner refused the Bundle (HTTP 422)"),
        GiveUp("partner refused the Bundle (HTTP 422)"),
    ),
    "first failure: base": (Attempt(1), FAILED, after(10)),
    "second failure: doubled": (Attempt(2, NOW - timedelta(minutes=1)), FAILED, after(20)),
    "tenth failure: capped": (Attempt(10, NOW - timedelta(hours=5)), FAILED, after(3600)),
    "a huge attempt number: capped, no overflow": (Attempt(10_000, NOW), FAILED, after(3600)),
    "Retry-After beyond the backoff wins": (
        Attempt(1),
        SendResult("retry", status=429, error="HTTP 429", retry_after=120),
        after(120),
    ),
    "Retry-After below the backoff: backoff": (
        Attempt(3, NOW),
        SendResult("retry", status=429, error="HTTP 429", retry_after=5),
        after(40),
    ),
    "Retry-After of a year: capped at a day": (
        Attempt(1),
        SendResult("retry", status=503, error="HTTP 503", retry_after=365 * 86400),
        after(MAX_RETRY_AFTER),
    ),
    "just under max age: retried": (
        Attempt(30, NOW - timedelta(hours=72) + timedelta(seconds=1)),
        FAILED,
        after(3600),
    ),
    "max age since the first failure: given up": (
        Attempt(30, NOW - timedelta(hours=72)),
        FAILED,
        GiveUp("gave up after 3 days, 0:00:00: partner answered HTTP 503"),
    ),
    "a long wait before the first attempt does not count": (Attempt(1, None), FAILED, after(10)),
    "an aware first failure compares with a naive now": (
        Attempt(2, datetime.fromisoformat("2026-11-01T12:00:00+00:00")),
        FAILED,
        GiveUp("gave up after 3 days, 0:00:00: partner answered HTTP 503"),
    ),
}


@pytest.mark.parametrize(("attempt", "result", "decision"), CASES.values(), ids=CASES.keys())
def test_decide(attempt: Attempt, result: SendResult, decision: object) -> None:
    assert FULL.decide(attempt, result, NOW) == decision


def test_the_default_jitter_is_full_jitter_within_the_ceiling() -> None:
    policy = RetryPolicy(base=10, cap=3600, jitter=lambda c: random.Random(7).uniform(0, c))
    seen = {policy.decide(Attempt(3), FAILED, NOW) for _ in range(3)}
    assert len(seen) == 1  # a seeded draw: the same decision
    [decision] = seen
    assert isinstance(decision, Retry)
    assert NOW <= decision.at <= NOW + timedelta(seconds=40)
    spread = {RetryPolicy().delay(4) for _ in range(50)}
    assert len(spread) > 1
    assert all(0 <= d <= 80 for d in spread)


@pytest.mark.parametrize(("base", "cap"), [(0, 10), (10, 0), (-1, 10)])
def test_a_policy_without_positive_delays_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match=r"^base and cap must be positive$"):
        RetryPolicy(base=base, cap=cap)


def test_delay_doubles_up_to_the_cap() -> None:
    top = RetryPolicy(base=10, cap=100, jitter=lambda ceiling: ceiling)
    assert [top.delay(n) for n in range(1, 6)] == [10, 20, 40, 80, 100]
    assert top.delay(0) == 10  # no attempt yet counts as the first


def test_delay_is_jittered_within_range() -> None:
    rng = random.Random(7)
    policy = RetryPolicy(base=10, cap=3600, jitter=lambda c: rng.uniform(0, c))
    delays = [policy.delay(4) for _ in range(200)]
    assert all(0 <= d <= 80 for d in delays)
    assert len(set(delays)) > 100  # not one fixed value


def test_expired_after_max_age_since_the_first_failure() -> None:
    policy = RetryPolicy()
    assert policy.expired(Attempt(9, NOW - timedelta(hours=72)), NOW)
    assert not policy.expired(Attempt(9, NOW - timedelta(hours=72) + timedelta(seconds=1)), NOW)
    assert not policy.expired(Attempt(1, None), NOW)
    short = RetryPolicy(max_age=timedelta(hours=1))
    assert short.expired(Attempt(2, NOW - timedelta(hours=2)), NOW)


def test_sub_second_delays_are_allowed_and_the_default_jitter_can_draw_zero() -> None:
    quick = RetryPolicy(base=0.25, cap=0.5)  # e.g. a partner on the same host, or a test
    delays = [quick.delay(n) for n in (1, 2, 3) for _ in range(100)]
    assert all(0 <= d <= 0.5 for d in delays)
    assert min(delays) < 0.05  # full jitter starts at zero, not at one second


def test_age_is_measured_across_time_zones() -> None:
    policy = RetryPolicy(max_age=timedelta(hours=72))
    eastern = timezone(timedelta(hours=-5))
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    # 2026-12-01 07:00-05:00 is 12:00 UTC: exactly 72 hours before now
    assert policy.expired(Attempt(4, datetime(2026, 12, 1, 7, 0, tzinfo=eastern)), now)
    assert not policy.expired(Attempt(4, datetime(2026, 12, 1, 7, 1, tzinfo=eastern)), now)
    # a naive first failure (as the store keeps it) is UTC, against an aware now
    assert policy.expired(Attempt(4, datetime(2026, 12, 1, 12, 0)), now)
    assert not policy.expired(Attempt(4, datetime(2026, 12, 1, 12, 1)), now)


def test_naive_times_are_utc_whatever_zone_the_machine_is_in(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        policy = RetryPolicy(max_age=timedelta(hours=72))
        now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
        assert policy.expired(Attempt(4, datetime(2026, 12, 1, 12, 0)), now)
        assert not policy.expired(Attempt(4, datetime(2026, 12, 1, 12, 1)), now)
    finally:
        monkeypatch.undo()
        time.tzset()
