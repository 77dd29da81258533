"""prescription(): how many visits, how often and until when a ServiceRequest orders."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from fhir_bridge.mapping.prescription import Prescription, last_day, prescription
from tests.unit.test_referral_rules import referral


def _timing(**repeat: Any) -> dict[str, Any]:
    return {"occurrenceTiming": {"repeat": repeat}}


def test_realistic_referral() -> None:
    """Whiplash, massage 2 per week, 8 visits, until the end of May."""
    assert prescription(referral()) == Prescription(
        visits=8, frequency="2 per week", expires=date(2026, 5, 31)
    )


def test_nothing_stated() -> None:
    assert prescription({"resourceType": "ServiceRequest"}) == Prescription(None, None, None)


# --- visits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sr", "visits"),
    [
        ({"quantityQuantity": {"value": 10}}, 10),
        ({"quantityQuantity": {"value": 10.0, "unit": "visits"}}, 10),
        ({"quantityQuantity": {"value": Decimal("6")}}, 6),
        ({**_timing(count=8), "quantityQuantity": {"value": 12}}, 8),  # the count wins
        ({**_timing(count="8"), "quantityQuantity": {"value": 12}}, 12),
        ({"quantityQuantity": {"value": 7.5}}, None),
        ({"quantityQuantity": {"value": "8"}}, None),
        ({"quantityQuantity": {"value": True}}, None),
        ({"quantityQuantity": {"value": 0}}, None),
        ({"quantityQuantity": {"value": -3}}, None),
        ({"quantityQuantity": {"value": float("nan")}}, None),
        # a UCUM unit that is not a time, or a time code without the UCUM system: visits
        (
            {"quantityQuantity": {"value": 8, "system": "http://unitsofmeasure.org", "code": "1"}},
            8,
        ),
        ({"quantityQuantity": {"value": 8, "code": "d"}}, 8),
        # a duration is not a number of visits
        (
            {
                "quantityQuantity": {
                    "value": 60,
                    "system": "http://unitsofmeasure.org",
                    "code": "min",
                }
            },
            None,
        ),
    ],
)
def test_visits(sr: dict[str, Any], visits: int | None) -> None:
    assert prescription(sr).visits == visits


# --- frequency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repeat", "text"),
    [
        ({"frequency": 2, "period": 1, "periodUnit": "wk"}, "2 per week"),
        ({"frequency": 1, "period": 2, "periodUnit": "wk"}, "1 per 2 weeks"),
        ({"frequency": 3, "period": 1, "periodUnit": "d"}, "3 per day"),
        ({"frequency": 2, "frequencyMax": 3, "period": 1, "periodUnit": "wk"}, "2-3 per week"),
        ({"frequency": 1, "period": Decimal("1.0"), "periodUnit": "mo"}, "1 per month"),
        ({"frequency": 1, "period": 1.5, "periodUnit": "wk"}, "1 per 1.5 weeks"),
        ({"frequency": 1, "period": 1.1, "periodUnit": "wk"}, "1 per 1.1 weeks"),
        ({"frequency": 1, "period": 10, "periodUnit": "d"}, "1 per 10 days"),
        ({"frequency": 2, "frequencyMax": 2, "period": 1, "periodUnit": "wk"}, "2 per week"),
        ({"frequency": 3, "frequencyMax": 2, "period": 1, "periodUnit": "wk"}, "3 per week"),
        ({"period": 1, "periodUnit": "wk"}, "1 per week"),
        ({"frequency": 2, "period": 1}, None),
        ({"frequency": 2, "periodUnit": "wk"}, None),
        ({"frequency": 2, "period": 1, "periodUnit": "fortnight"}, None),
        ({"frequency": "2", "period": 1, "periodUnit": "wk"}, None),
        ({"frequency": 2, "period": 0, "periodUnit": "wk"}, None),
        ({"frequency": 2, "period": 1, "periodUnit": ["wk"]}, None),
    ],
)
def test_frequency_from_repeat(repeat: dict[str, Any], text: str | None) -> None:
    assert prescription(_timing(**repeat)).frequency == text


def test_frequency_from_timing_code_text() -> None:
    sr = {"occurrenceTiming": {"code": {"text": " twice a week "}}}
    assert prescription(sr).frequency == "twice a week"
    sr["occurrenceTiming"]["repeat"] = {"frequency": 2, "period": 1, "periodUnit": "wk"}
    assert prescription(sr).frequency == "2 per week"


# --- expiry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sr", "expires"),
    [
        ({"occurrencePeriod": {"start": "2026-03-01", "end": "2026-04-30"}}, date(2026, 4, 30)),
        ({"occurrencePeriod": {"end": "2026-04-30T23:30:00-05:00"}}, date(2026, 4, 30)),
        ({"occurrencePeriod": {"end": "2026-02"}}, date(2026, 2, 28)),
        ({"occurrencePeriod": {"end": "2028"}}, date(2028, 12, 31)),
        (_timing(boundsPeriod={"end": "2026-05-31"}), date(2026, 5, 31)),
        ({"occurrencePeriod": {"start": "2026-03-01"}}, None),
        ({"occurrencePeriod": {"end": "2026-13-01"}}, None),
        ({"occurrencePeriod": {"end": "31/05/2026"}}, None),
        ({"occurrencePeriod": {"end": 20260531}}, None),
    ],
)
def test_expires(sr: dict[str, Any], expires: date | None) -> None:
    assert prescription(sr).expires == expires


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2026-02-20", date(2026, 2, 20)),
        ("2024-02", date(2024, 2, 29)),
        ("2026-02-30", None),
        ("2026-02-20 ", None),
        (None, None),
    ],
)
def test_last_day(value: Any, day: date | None) -> None:
    assert last_day(value) == day


# --- untrusted input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sr",
    [
        None,
        [],
        "ServiceRequest",
        {"occurrenceTiming": "twice a week"},
        {"occurrenceTiming": {"repeat": [], "code": "BID"}},
        {"occurrenceTiming": {"repeat": {"count": [8], "boundsPeriod": "2026"}}},
        {"occurrencePeriod": [], "quantityQuantity": 8},
    ],
)
def test_malformed_input_gives_nothing(sr: Any) -> None:
    assert prescription(sr) == Prescription(None, None, None)
