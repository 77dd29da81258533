"""The typo guards for codes in ``mappings/``: real codes pass, one-character slips do not."""

from __future__ import annotations

import pytest

from fhir_bridge.mapping.code_checks import is_cpt_code, is_loinc_code, is_snomed_concept_id

# real codes the mappings use (LOINC: pain severity, progress note, ...; SNOMED CT: body sites,
# procedures; CPT: therapeutic exercise, massage, manual therapy), plus a Category II / PLA code
REAL_LOINC = [
    "29463-7",
    "72514-3",
    "41387-2",
    "77860-5",
    "77874-6",
    "97909-6",
    "11506-3",
    "18842-5",
]
REAL_SNOMED = ["14975008", "231097002", "419161000", "419465000", "45048000", "85562004"]
REAL_CPT = ["97110", "97124", "97140", "1036F", "0001U", "0075T"]


@pytest.mark.parametrize("code", REAL_LOINC)
def test_real_loinc_codes_pass_their_check_digit(code: str) -> None:
    assert is_loinc_code(code)


@pytest.mark.parametrize("code", REAL_LOINC)
def test_a_wrong_loinc_check_digit_is_caught(code: str) -> None:
    body, digit = code.split("-")
    for wrong in set("0123456789") - {digit}:
        assert not is_loinc_code(f"{body}-{wrong}")


@pytest.mark.parametrize("code", ["72514", "72514-", "-3", "72514-34", "7251A-3", "12345678-9"])
def test_malformed_loinc_codes_are_refused(code: str) -> None:
    assert not is_loinc_code(code)


def test_a_loinc_code_whose_check_digit_is_zero() -> None:
    # creatinine (2160-0): the digits sum to a multiple of ten, so the check digit is 0, not 10
    assert is_loinc_code("2160-0")


@pytest.mark.parametrize("code", REAL_SNOMED)
def test_real_snomed_concept_ids_pass_verhoeff(code: str) -> None:
    assert is_snomed_concept_id(code)


@pytest.mark.parametrize("code", REAL_SNOMED)
def test_any_single_digit_slip_in_a_snomed_id_is_caught(code: str) -> None:
    for position, digit in enumerate(code):
        for other in set("0123456789") - {digit}:
            slipped = code[:position] + other + code[position + 1 :]
            assert not is_snomed_concept_id(slipped), slipped


@pytest.mark.parametrize("code", REAL_SNOMED)
def test_adjacent_transpositions_in_a_snomed_id_are_caught(code: str) -> None:
    for i in range(len(code) - 1):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
            assert not is_snomed_concept_id(swapped), swapped


@pytest.mark.parametrize(
    "code",
    [
        "12345",  # too short
        "1234567890123456789",  # too long
        "22253A00",  # not digits
        "1234567",  # partition 56 is not a concept partition
        "2148514019",  # a description id (partition 01), not a concept id
        "1000001111",  # partition 11: a long-format description id
    ],
)
def test_non_concept_ids_are_refused(code: str) -> None:
    assert not is_snomed_concept_id(code)


def test_long_concept_ids_pass() -> None:
    # 18-digit metadata concepts: "Fully specified name" and "Preferred"
    assert is_snomed_concept_id("900000000000003001")
    assert is_snomed_concept_id("900000000000548007")


@pytest.mark.parametrize("code", REAL_CPT)
def test_cpt_shaped_codes_pass(code: str) -> None:
    assert is_cpt_code(code)


@pytest.mark.parametrize("code", ["9714", "971400", "9714A", "A7140", "97140 ", "0001u"])
def test_misshapen_cpt_codes_are_refused(code: str) -> None:
    assert not is_cpt_code(code)
