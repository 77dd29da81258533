"""What a prescription (an inbound FHIR R4 ServiceRequest) orders: visits, how often, until when.

Pure and tolerant: the ServiceRequest is untrusted JSON, so anything missing or malformed simply
gives ``None`` for that part; nothing raises. Numbers may be ``int``, ``float`` or ``Decimal``
(``fhir_bridge.fhir.jsonio`` parses decimals as ``Decimal``).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

UCUM = "http://unitsofmeasure.org"

#: Timing.repeat.periodUnit (UCUM time units): singular and plural words
PERIOD_UNITS = {
    "s": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "h": ("hour", "hours"),
    "d": ("day", "days"),
    "wk": ("week", "weeks"),
    "mo": ("month", "months"),
    "a": ("year", "years"),
}

# YYYY[-MM[-DD[Thh:mm...]]]: only the date part is read
_DATE_RE = re.compile(r"(?P<year>[0-9]{4})(?:-(?P<month>[0-9]{2})(?:-(?P<day>[0-9]{2})(?:T.*)?)?)?")


@dataclass(frozen=True)
class Prescription:
    """The amount of treatment a prescription orders; ``None`` where it does not say."""

    visits: int | None  # number of visits ordered
    frequency: str | None  # human text, e.g. "2 per week"
    expires: date | None  # last day the prescription covers


def prescription(sr: Any) -> Prescription:
    """Visits, frequency and expiry date stated by the ServiceRequest ``sr``."""
    sr = _obj(sr)
    timing = _obj(sr.get("occurrenceTiming"))
    repeat = _obj(timing.get("repeat"))
    return Prescription(
        visits=_visits(sr, repeat),
        frequency=_frequency_text(repeat) or _text(_obj(timing.get("code")).get("text")),
        expires=_expires(sr, repeat),
    )


def last_day(value: Any) -> date | None:
    """The last calendar day a FHIR date or dateTime covers, or None when it is not one.

    Read as written (the date part; no time-zone shift): ``2026-03-31T23:00:00-05:00`` is
    2026-03-31, ``2026-02`` is 2026-02-28, ``2026`` is 2026-12-31.
    """
    match = _DATE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year = int(match["year"])
    month = int(match["month"] or 12)
    try:
        day = int(match["day"]) if match["day"] else calendar.monthrange(year, month)[1]
        return date(year, month, day)
    except ValueError:  # month 13, day 31 of April, year 0 ...
        return None


# --- parts ----------------------------------------------------------------------------------


def _visits(sr: dict[str, Any], repeat: dict[str, Any]) -> int | None:
    """occurrenceTiming.repeat.count, else quantityQuantity.value (a whole number of visits)."""
    count = _whole(repeat.get("count"))
    if count is not None:
        return count
    quantity = _obj(sr.get("quantityQuantity"))
    unit = quantity.get("code")
    if quantity.get("system") == UCUM and isinstance(unit, str) and unit in PERIOD_UNITS:
        return None  # a duration (e.g. 60 min), not a number of visits
    return _whole(quantity.get("value"))


def _frequency_text(repeat: dict[str, Any]) -> str | None:
    """``frequency[-frequencyMax] per [period] periodUnit``: "2 per week", "1 per 2 weeks"."""
    period = _positive(repeat.get("period"))
    unit = repeat.get("periodUnit")
    words = PERIOD_UNITS.get(unit) if isinstance(unit, str) else None
    if period is None or words is None:
        return None
    times = 1 if repeat.get("frequency") is None else _whole(repeat.get("frequency"))
    if times is None:
        return None
    most = _whole(repeat.get("frequencyMax"))
    count = f"{times}-{most}" if most is not None and most > times else str(times)
    span = words[0] if period == 1 else f"{_number_text(period)} {words[1]}"
    return f"{count} per {span}"


def _expires(sr: dict[str, Any], repeat: dict[str, Any]) -> date | None:
    """occurrencePeriod.end, else occurrenceTiming.repeat.boundsPeriod.end (the date part)."""
    for period in (sr.get("occurrencePeriod"), repeat.get("boundsPeriod")):
        end = last_day(_obj(period).get("end"))
        if end is not None:
            return end
    return None


# --- primitives -----------------------------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _positive(value: Any) -> Decimal | None:
    """A JSON number above zero (never a boolean, a string, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = Decimal(str(value))  # str: 1.1 is 1.1, not its binary expansion
    return number if number.is_finite() and number > 0 else None


def _whole(value: Any) -> int | None:
    """A whole number above zero (``8`` or ``8.0``), else None."""
    number = _positive(value)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def _number_text(number: Decimal) -> str:
    return str(int(number)) if number == number.to_integral_value() else str(number.normalize())
