"""ICD-10-CM (``http://hl7.org/fhir/sid/icd-10-cm``): is a code known, is it billable.

The answers come from the code table shipped with simple-icd-10-cm 1.5.0: ONE release of the
CMS ICD-10-CM files (the April 2026 update of FY2026). Codes are added and deleted every
1 October (M54.5 became a non-billable header in FY2022), so "billable on the date the
prescription was written" (or the date of service) is approximated by "billable in that one
release". A date-aware check needs one CMS code file per fiscal year (the library's
``change_version``).

Codes are accepted with or without the dot (``M54.50``, ``M5450``), as the library does, and are
case-sensitive (``m54.50`` is not a code). The library parses its XML table on first use (~3 s):
call :func:`preload_icd10cm` at start-up.
"""

from __future__ import annotations

import threading
import warnings
from functools import cache
from types import ModuleType

_lock = threading.Lock()


@cache
def _table() -> ModuleType:
    """simple-icd-10-cm, imported on first use (it parses its XML table: ~3 s).

    The package reads its data with the legacy ``importlib.resources.read_text`` and so warns
    (DeprecationWarning) while importing; that warning is silenced for this import only.
    """
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm

    return simple_icd_10_cm


def preload_icd10cm() -> None:
    """Load the ICD-10-CM table now (call at start-up so the first request does not pay for it)."""
    _table()


def is_known(code: str) -> bool:
    """True when ``code`` is an ICD-10-CM category or subcategory, billable or a header.

    Chapters (``13``) and blocks (``M40-M54``) of the classification are not codes: False.
    Anything that is not a string is False.
    """
    return isinstance(code, str) and _table().is_category_or_subcategory(code)


def is_billable(code: str) -> bool:
    """True when ``code`` is a known ICD-10-CM code with no subcodes (a leaf: billable)."""
    return is_known(code) and _table().is_leaf(code)


def subcodes(code: str) -> tuple[str, ...]:
    """The direct subcodes of a known code (empty for a leaf or an unknown code)."""
    if not is_known(code):
        return ()
    return tuple(_table().get_children(code))
