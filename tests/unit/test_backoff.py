"""Backoff policy: full-jitter exponential delays, Retry-After parsing, the give-up age."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from fhir_bridge.exchange.backoff import given_up, next_delay, retry_after_seconds

NOW = datetime(2026, 12, 1, 12, 0, 0)


class _Top(random.Random):
    """An rng that always picks the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_delay_doubles_up_to_the_cap() -> None:
    top = _Top()
    assert [next_delay(n, base=10, cap=100, rng=top) for n in range(1, 6)] == [
        10,
        20,
        40,
        80,
        100,
    ]


def test_delay_is_jittered_within_range() -> None:
    rng = random.Random(7)
    delays = [next_delay(4, base=10, cap=3600, rng=rng) for _ in range(200)]
    assert all(0 <= d <= 80 for d in delays)
    assert len(set(delays)) > 100  # not one fixed value


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert next_delay(10_000, rng=_Top()) == 3600
    assert next_delay(0, base=5, rng=_Top()) == 5


def test_delay_refuses_non_positive_settings() -> None:
    with pytest.raises(ValueError, match="positive"):
        next_delay(1, base=0, rng=random.Random())


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Tue, 01 Dec 2026 12:01:30 GMT", 90.0),
        ("Tue, 01 Dec 2026 11:00:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, NOW) == expected


def test_retry_after_with_aware_now() -> None:
    assert retry_after_seconds("Tue, 01 Dec 2026 12:00:10 GMT", NOW.replace(tzinfo=UTC)) == 10.0


def test_given_up_after_max_age() -> None:
    first = NOW - timedelta(hours=72)
    assert given_up(first, NOW)
    assert not given_up(first + timedelta(seconds=1), NOW)
    assert given_up(NOW - timedelta(hours=2), NOW, max_age=timedelta(hours=1))
