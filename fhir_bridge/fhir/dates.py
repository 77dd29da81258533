"""FHIR date, dateTime and instant values as the half-open UTC ranges that search compares."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache

#: Lower and upper bounds standing in for an open start or end (a Period without start/end).
MIN_DT = datetime(1, 1, 1)
MAX_DT = datetime(9999, 12, 31, 23, 59, 59)

# date | dateTime | instant: YYYY[-MM[-DD[Thh:mm[:ss[.fff]][zone]]]]
_DATETIME_RE = re.compile(
    r"(?P<year>[0-9]{4})"
    r"(?:-(?P<month>[0-9]{2})"
    r"(?:-(?P<day>[0-9]{2})"
    r"(?:T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?)?"
    r"(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})?"
    r")?)?)?"
)
_MAX_OFFSET_MINUTES = 14 * 60
_ONE_SECOND = timedelta(seconds=1)
_ONE_MINUTE = timedelta(minutes=1)
_ONE_DAY = timedelta(days=1)


@lru_cache(maxsize=8192)
def _cached_range(value: str, strict: bool) -> tuple[datetime, datetime]:
    return _parse_range(value, strict=strict)


def parse_fhir_datetime_range(value: str, *, strict: bool = False) -> tuple[datetime, datetime]:
    """The range [low, high) in naive UTC that a FHIR date/dateTime/instant denotes.

    The range spans the precision given: ``2026`` is the whole year, ``2026-11-20T10:00:00Z``
    one second. Date-only values are read as UTC. A time without a zone is read as UTC unless
    ``strict`` (the FHIR rule for stored data), which rejects it. Raises ValueError.
    """
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a FHIR date, dateTime or instant")
    return _cached_range(value, strict)


def _parse_range(value: str, *, strict: bool) -> tuple[datetime, datetime]:
    match = _DATETIME_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a FHIR date, dateTime or instant")
    year, month, day, hour = match.group("year", "month", "day", "hour")
    try:
        if hour is None:
            return _date_range(int(year), month, day)
        return _time_range(match, strict=strict)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value!r} is not a valid date: {exc}") from None


def _date_range(year: int, month: str | None, day: str | None) -> tuple[datetime, datetime]:
    if year == 0:
        raise ValueError("year 0 does not exist")
    if month is None:
        low = datetime(year, 1, 1)
        return low, _shift(low, year=year + 1)
    low = datetime(year, int(month), int(day) if day else 1)
    if day is None:
        nxt = (year + 1, 1) if low.month == 12 else (year, low.month + 1)
        return low, _shift(low, year=nxt[0], month=nxt[1])
    return low, _add(low, _ONE_DAY)


def _time_range(match: re.Match[str], *, strict: bool) -> tuple[datetime, datetime]:
    zone = match.group("zone")
    if zone is None and strict:
        raise ValueError("a time needs a timezone offset")
    hour, minute = int(match.group("hour")), int(match.group("minute"))
    second_text, fraction = match.group("second", "fraction")
    second = int(second_text) if second_text else 0
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("time out of range")
    local = datetime(
        int(match.group("year")),
        int(match.group("month")),
        int(match.group("day")),
        hour,
        minute,
        min(second, 59),
        int((fraction or "0")[:6].ljust(6, "0")),
    )
    if second == 60:  # leap second: the instant after 23:59:59
        local = _add(local, _ONE_SECOND)
    low = _add(local, -_zone_offset(zone)) if zone else local
    if second_text is None:
        width = _ONE_MINUTE
    elif fraction:
        width = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    else:
        width = _ONE_SECOND
    return low, _add(low, width)


def _zone_offset(zone: str) -> timedelta:
    if zone == "Z":
        return timedelta(0)
    hours, minutes = int(zone[1:3]), int(zone[4:])
    if minutes > 59 or hours * 60 + minutes > _MAX_OFFSET_MINUTES:
        raise ValueError(f"timezone offset {zone} out of range")
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if zone[0] == "-" else offset


def _add(dt: datetime, delta: timedelta) -> datetime:
    """dt + delta, clamped to [MIN_DT, MAX_DT] instead of overflowing."""
    try:
        result = dt + delta
    except OverflowError:
        # a zero delta cannot overflow, so < and <= are the same here
        return MIN_DT if delta < timedelta(0) else MAX_DT  # pragma: no mutate
    return min(max(result, MIN_DT), MAX_DT)


def _shift(dt: datetime, *, year: int, month: int = 1) -> datetime:
    """``dt``, the first instant of a month, moved to ``year``-``month``; MAX_DT past 9999."""
    return MAX_DT if year > 9999 else dt.replace(year=year, month=month)


def to_instant(dt: datetime) -> str:
    """A naive UTC datetime as a FHIR instant with microseconds: ``2026-11-20T15:00:00.123456Z``.

    Full precision, so ``_lastUpdated=gt<a served meta.lastUpdated>`` (polling) never skips a
    version written in the same millisecond.
    """
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
        f".{dt.microsecond:06d}Z"
    )
