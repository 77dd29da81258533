"""Scoring questionnaires answered item by item (pure): the Oswestry and Neck Disability Index.

Both have ten sections scored 0-5; the published rules:

* **ODI** (Fairbank & Pynsent, Spine 2000;25(22):2940-2952, "The Oswestry Disability Index",
  https://pubmed.ncbi.nlm.nih.gov/11074683/): score = total / (5 x sections answered) x 100 %;
  one section may be left unanswered (the denominator shrinks), more make the score invalid.
* **NDI** (Vernon & Mior, J Manipulative Physiol Ther 1991;14(7):409-415,
  https://pubmed.ncbi.nlm.nih.gov/1834753/): total of the ten sections (0-50) x 2, as a
  percentage; every section answered (the published 0-50 total has no rule for gaps here).

A record may send the items (``assessments[i].items``: ten numbers 0-5, ``null`` for an
unanswered section) with or without ``value``; the score is computed from the items, a
``value`` sent with them must equal it, and the record keeps both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True)
class ItemRule:
    """How one questionnaire's items make its score."""

    items: int
    item_max: int
    max_unanswered: int
    name: str


ITEM_RULES: dict[str, ItemRule] = {
    "oswestry_disability_index": ItemRule(10, 5, 1, "ODI"),
    "neck_disability_index": ItemRule(10, 5, 0, "NDI"),
}
ONE_DECIMAL = Decimal("0.1")


def item_problem(rule: ItemRule, answers: Sequence[int | None]) -> str | None:
    """Why ``answers`` cannot be scored (None: they can)."""
    if len(answers) != rule.items:
        return (
            f"{rule.name} has {rule.items} items (null for an unanswered one), not {len(answers)}"
        )
    unanswered = sum(1 for a in answers if a is None)
    if unanswered > rule.max_unanswered:
        allowed = f"at most {rule.max_unanswered}" if rule.max_unanswered else "none"
        return f"{rule.name} items: {unanswered} unanswered, {allowed} may be"
    return None


def item_score(rule: ItemRule, answers: Sequence[int | None]) -> Decimal:
    """The score (percent, one decimal) of answers that ``item_problem`` accepts."""
    answered = [a for a in answers if a is not None]
    total = Decimal(sum(answered)) * 100 / Decimal(rule.item_max * len(answered))
    # With 9 or 10 sections of 0-5 the percentage never ends in an exact half at the second
    # decimal, so the rounding mode cannot show; half-up is what people expect to read.
    rounded = total.quantize(ONE_DECIMAL, rounding=ROUND_HALF_UP)  # pragma: no mutate
    # normalize() writes 10 as 1E+1; adding (or subtracting) 0 gives back 10
    return rounded.normalize() + 0  # pragma: no mutate
