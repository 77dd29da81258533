"""Retry-After parsing (delay-seconds and HTTP-date); the policy: test_retry_policy.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_bridge.exchange.backoff import retry_after_seconds

NOW = datetime(2026, 12, 1, 12, 0, 0)


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
