"""Shape and check-digit tests for standard codes, to catch typos in ``mappings/``.

CPT codes are five characters (four digits, then a digit or the F/T/U of Category II/III and
PLA codes). LOINC codes end in a mod-10 check digit (LOINC Users' Guide, "Check digit"). SNOMED CT
concept ids end in a Verhoeff check digit, with partition identifier 00 or 10 in the two digits
before it (SNOMED CT Technical Implementation Guide, 6.6 and 6.7).
"""

from __future__ import annotations

import re

CPT_RE = re.compile(r"\d{4}[0-9FTU]")
LOINC_RE = re.compile(r"(\d{1,7})-(\d)")
SNOMED_RE = re.compile(r"\d{6,18}")

#: Verhoeff's permutation p applied once; p(pos, d) is this applied pos mod 8 times
_VERHOEFF_P1 = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)
#: partition identifiers of a concept id (short and long format)
_CONCEPT_PARTITIONS = frozenset({"00", "10"})


def is_cpt_code(code: str) -> bool:
    """True for a well-shaped CPT code (``97140``, ``0001U``, ``1036F``)."""
    return CPT_RE.fullmatch(code) is not None


def is_loinc_code(code: str) -> bool:
    """True for a LOINC code whose mod-10 check digit is right (``72514-3``)."""
    match = LOINC_RE.fullmatch(code)
    if not match:
        return False
    total = 0
    for position, char in enumerate(reversed(match.group(1))):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return (10 - total % 10) % 10 == int(match.group(2))


def is_snomed_concept_id(code: str) -> bool:
    """True for a SNOMED CT concept id: digits, partition 00 or 10, valid Verhoeff digit."""
    if not SNOMED_RE.fullmatch(code) or code[-3:-1] not in _CONCEPT_PARTITIONS:
        return False
    check = 0
    for position, char in enumerate(reversed(code)):
        check = _dihedral(check, _verhoeff_permute(position, int(char)))
    return check == 0


def _dihedral(j: int, k: int) -> int:
    """Multiplication in the dihedral group D5 (Verhoeff's table d)."""
    if j < 5:
        return (j + k) % 5 if k < 5 else 5 + (j + k) % 5
    return 5 + (j - k) % 5 if k < 5 else (j - k) % 5


def _verhoeff_permute(position: int, digit: int) -> int:
    for _ in range(position % 8):
        digit = _VERHOEFF_P1[digit]
    return digit
