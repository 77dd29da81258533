"""is_valid_npi: 10 digits, Luhn check digit over the 80840-prefixed number."""

from __future__ import annotations

import pytest

from fhir_bridge.fhir.npi import is_valid_npi


@pytest.mark.parametrize("npi", ["1234567893", "1245319599", "1407071236", "9941339100"])
def test_known_good_npis(npi: str) -> None:
    assert is_valid_npi(npi)


@pytest.mark.parametrize(
    "npi",
    [
        "9941339108",  # used in official CDex examples, but the check digit is wrong
        "12345678",  # 8 digits (CRD Organization example)
        "",
        "123456789a",
        "12345678930",
        " 1234567893",
        "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff13",  # full-width digits
    ],
)
def test_known_bad_npis(npi: str) -> None:
    assert not is_valid_npi(npi)


def test_every_other_check_digit_is_rejected() -> None:
    assert [d for d in "0123456789" if is_valid_npi("123456789" + d)] == ["3"]
