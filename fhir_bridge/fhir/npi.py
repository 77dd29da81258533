"""Check a National Provider Identifier (NPI): 10 digits with a Luhn check digit.

CMS computes the check digit over the 9-digit base prefixed with ``80840`` (the ISO 7812
issuer prefix for US health applications); adding that prefix is the same as adding the
constant 24 to the Luhn sum of the 9 digits (US Core invariants us-core-16 and us-core-17).
"""

from __future__ import annotations

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
_PREFIX = "80840"


def _luhn_sum(digits: str) -> int:
    """Luhn sum of ``digits``, doubling every second digit from the right (check digit excluded)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 0:  # rightmost payload digit sits next to the check digit: doubled
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total


def is_valid_npi(value: str) -> bool:
    """True when ``value`` is exactly 10 ASCII digits whose last digit is the NPI check digit."""
    if not isinstance(value, str) or len(value) != 10 or not value.isascii():
        return False
    if not value.isdigit():
        return False
    check = (10 - _luhn_sum(_PREFIX + value[:9]) % 10) % 10
    return check == int(value[9])
