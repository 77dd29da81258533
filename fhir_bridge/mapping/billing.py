"""Billable units of timed 15-minute codes by the CMS 8-minute rule, derived from minutes.

Medicare Claims Processing Manual, Pub. 100-04, ch. 5, 20.2: the *total* timed minutes of the
day decide the total units (8-22 min = 1, 23-37 = 2, ...); each code first gets its whole
15-minute units, and the units left go to the codes with the most remaining minutes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class BillingLine:
    """Units billed for one code, and the minutes they rest on."""

    system: str
    code: str
    minutes: int
    units: int


def total_units(total_minutes: int) -> int:
    """Units for a day's total timed minutes: 0 below 8, then one more every 15 minutes."""
    return max(0, (total_minutes + 7) // 15)


def units_by_code(minutes: Iterable[tuple[str, str, int]]) -> list[BillingLine]:
    """Distribute the day's units over (system, code, minutes) entries of timed codes.

    Entries of the same code are added up first. Returns one line per code, in first-seen
    order, including codes that end up with 0 units (their minutes still count).
    """
    per_code: dict[tuple[str, str], int] = {}
    for system, code, mins in minutes:
        per_code[(system, code)] = per_code.get((system, code), 0) + mins
    units = {key: mins // 15 for key, mins in per_code.items()}
    left = total_units(sum(per_code.values())) - sum(units.values())
    order = sorted(per_code, key=lambda key: (-(per_code[key] % 15), -per_code[key]))
    for key in order[:left]:
        units[key] += 1
    return [
        BillingLine(system, code, per_code[(system, code)], units[(system, code)])
        for system, code in per_code
    ]
