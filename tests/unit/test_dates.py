"""FHIR date/dateTime/instant values as the UTC ranges search compares, and instant output."""

from __future__ import annotations

from datetime import datetime

import pytest

from fhir_bridge.fhir import dates
from fhir_bridge.fhir.dates import MAX_DT, MIN_DT, parse_fhir_datetime_range, to_instant


@pytest.fixture(autouse=True)
def _parse_afresh():
    """Each case parses its value itself, not an answer cached by an earlier test."""
    dates._cached_range.cache_clear()


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2026", datetime(2026, 1, 1), datetime(2027, 1, 1)),
        ("2026-11", datetime(2026, 11, 1), datetime(2026, 12, 1)),
        ("2026-12", datetime(2026, 12, 1), datetime(2027, 1, 1)),
        ("2024-02", datetime(2024, 2, 1), datetime(2024, 3, 1)),
        ("2026-11-20", datetime(2026, 11, 20), datetime(2026, 11, 21)),
        ("2026-12-31", datetime(2026, 12, 31), datetime(2027, 1, 1)),
        ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),
    ],
)
def test_partial_dates_cover_their_whole_precision_in_utc(value, low, high):
    assert parse_fhir_datetime_range(value) == (low, high)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        # second precision: one second wide, converted to UTC
        (
            "2026-11-20T10:00:00-05:00",
            datetime(2026, 11, 20, 15, 0, 0),
            datetime(2026, 11, 20, 15, 0, 1),
        ),
        ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 10, 0, 1)),
        ("2026-11-20T10:00:00+00:00", datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 10, 0, 1)),
        # an evening in New York is the next day in UTC
        (
            "2026-11-20T22:30:00-05:00",
            datetime(2026, 11, 21, 3, 30),
            datetime(2026, 11, 21, 3, 30, 1),
        ),
        # an early morning in Tokyo is the previous day in UTC
        ("2026-11-20T02:00:00+09:00", datetime(2026, 11, 19, 17), datetime(2026, 11, 19, 17, 0, 1)),
        # crossing a year boundary, both ways
        ("2026-12-31T23:00:00-02:00", datetime(2027, 1, 1, 1), datetime(2027, 1, 1, 1, 0, 1)),
        (
            "2027-01-01T00:30:00+01:00",
            datetime(2026, 12, 31, 23, 30),
            datetime(2026, 12, 31, 23, 30, 1),
        ),
        # half-hour and extreme offsets
        (
            "2026-11-20T10:00:00+05:30",
            datetime(2026, 11, 20, 4, 30),
            datetime(2026, 11, 20, 4, 30, 1),
        ),
        ("2026-11-20T10:00:00+14:00", datetime(2026, 11, 19, 20), datetime(2026, 11, 19, 20, 0, 1)),
        # minute precision: one minute wide
        ("2026-11-20T10:00-05:00", datetime(2026, 11, 20, 15), datetime(2026, 11, 20, 15, 1)),
    ],
)
def test_datetimes_with_offsets_become_naive_utc_ranges(value, low, high):
    assert parse_fhir_datetime_range(value) == (low, high)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        (
            "2026-11-20T10:00:00.123Z",
            datetime(2026, 11, 20, 10, 0, 0, 123000),
            datetime(2026, 11, 20, 10, 0, 0, 124000),
        ),
        (
            "2026-11-20T10:00:00.5Z",
            datetime(2026, 11, 20, 10, 0, 0, 500000),
            datetime(2026, 11, 20, 10, 0, 0, 600000),
        ),
        (
            "2026-11-20T10:00:00.123456Z",
            datetime(2026, 11, 20, 10, 0, 0, 123456),
            datetime(2026, 11, 20, 10, 0, 0, 123457),
        ),
        # beyond microseconds: truncated, still one microsecond wide
        (
            "2026-11-20T10:00:00.123456789Z",
            datetime(2026, 11, 20, 10, 0, 0, 123456),
            datetime(2026, 11, 20, 10, 0, 0, 123457),
        ),
    ],
)
def test_fractional_seconds_set_the_width_of_the_range(value, low, high):
    assert parse_fhir_datetime_range(value) == (low, high)


def test_time_without_offset_is_utc_for_search_but_rejected_when_strict():
    assert parse_fhir_datetime_range("2026-11-20T10:00:00") == (
        datetime(2026, 11, 20, 10),
        datetime(2026, 11, 20, 10, 0, 1),
    )
    with pytest.raises(ValueError, match="timezone"):
        parse_fhir_datetime_range("2026-11-20T10:00:00", strict=True)


def test_strict_still_accepts_dates_and_zoned_times():
    assert parse_fhir_datetime_range("2026-11-20", strict=True)[0] == datetime(2026, 11, 20)
    assert parse_fhir_datetime_range("2026-11-20T10:00:00Z", strict=True)[0] == datetime(
        2026, 11, 20, 10
    )


def test_leap_second_is_the_instant_after_the_last_second_of_the_day():
    assert parse_fhir_datetime_range("2016-12-31T23:59:60Z") == (
        datetime(2017, 1, 1),
        datetime(2017, 1, 1, 0, 0, 1),
    )


def test_ranges_at_the_ends_of_the_calendar_are_clamped_not_overflowing():
    assert parse_fhir_datetime_range("9999") == (datetime(9999, 1, 1), MAX_DT)
    assert parse_fhir_datetime_range("9999-12-31")[1] == MAX_DT
    assert parse_fhir_datetime_range("0001-01-01T00:00:00+05:00")[0] == MIN_DT


@pytest.mark.parametrize(
    "value",
    [
        "",
        "26",
        "2026-1",
        "2026-13",
        "2026-02-30",
        "2026-11-20T",
        "2026-11-20T25:00:00Z",
        "2026-11-20T10:60:00Z",
        "2026-11-20T10:00:61Z",
        "2026-11-20T10:00:00+15:00",
        "2026-11-20T10:00:00+05:70",
        "2026-11-20 10:00:00Z",
        "2026-11-20T10Z",
        "0000",
        "today",
        "٢٠٢٦",  # Arabic-Indic digits are not FHIR digits
    ],
)
def test_malformed_values_raise_value_error(value):
    with pytest.raises(ValueError, match="not"):
        parse_fhir_datetime_range(value)


def test_non_string_raises_value_error():
    with pytest.raises(ValueError, match="not a FHIR date"):
        parse_fhir_datetime_range(20261120)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2026, 11, 20, 15, 0, 0, 123456), "2026-11-20T15:00:00.123456Z"),
        (datetime(2026, 11, 20, 15, 0, 0), "2026-11-20T15:00:00.000000Z"),
        (datetime(999, 1, 2, 3, 4, 5), "0999-01-02T03:04:05.000000Z"),
    ],
)
def test_to_instant_formats_naive_utc_with_microseconds(dt, text):
    assert to_instant(dt) == text


def test_to_instant_round_trips_into_a_range_containing_the_value():
    dt = datetime(2026, 11, 20, 15, 0, 0, 123456)
    low, high = parse_fhir_datetime_range(to_instant(dt), strict=True)
    assert low <= dt < high


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0000", "year 0 does not exist"),
        ("2026-11-20T24:00:00Z", "time out of range"),
        ("2026-11-20T10:60:00Z", "time out of range"),
        ("2026-11-20T10:00:00+05:60", "timezone offset +05:60 out of range"),
        ("2026-11-20T10:00:00+14:01", "timezone offset +14:01 out of range"),
    ],
)
def test_a_refused_value_says_which_part_is_wrong(value, reason):
    # the reason reaches the client in the OperationOutcome of a refused search or write
    with pytest.raises(ValueError, match="is not a valid date") as refused:
        parse_fhir_datetime_range(value)
    assert str(refused.value) == f"{value!r} is not a valid date: {reason}"


def test_strict_refusal_of_a_zoneless_time_names_the_missing_offset():
    with pytest.raises(ValueError, match="is not a valid date") as refused:
        parse_fhir_datetime_range("2026-11-20T10:00", strict=True)
    assert str(refused.value).endswith("a time needs a timezone offset")


@pytest.mark.parametrize(
    ("value", "low"),
    [
        ("0001", datetime(1, 1, 1)),
        ("2026-11-20T23:59:59Z", datetime(2026, 11, 20, 23, 59, 59)),
        ("2026-11-20T23:59:59+05:59", datetime(2026, 11, 20, 18, 0, 59)),
        ("2026-11-20T10:00:00+05:30", datetime(2026, 11, 20, 4, 30)),
        ("2026-11-20T10:00:00-14:00", datetime(2026, 11, 21, 0, 0)),
    ],
)
def test_the_last_valid_value_of_each_part_is_accepted(value, low):
    assert parse_fhir_datetime_range(value)[0] == low


def test_the_year_before_the_last_ends_at_the_start_of_the_last():
    assert parse_fhir_datetime_range("9998") == (datetime(9998, 1, 1), datetime(9999, 1, 1))
    assert parse_fhir_datetime_range("9998-12") == (datetime(9998, 12, 1), datetime(9999, 1, 1))


def test_a_time_at_the_last_second_of_the_calendar_ends_at_the_calendar_end():
    # adding the one-second width overflows Python's datetime: clamped to the end, not the start
    assert parse_fhir_datetime_range("9999-12-31T23:59:59Z") == (
        datetime(9999, 12, 31, 23, 59, 59),
        MAX_DT,
    )
    assert parse_fhir_datetime_range("9999-12-31T23:00:00-05:00") == (MAX_DT, MAX_DT)
