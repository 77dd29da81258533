"""Minimal clinically important differences (``mappings/mcid.yaml``): a value with its source, or
none with the reason, for every measure of ``measures.yaml``.

Loaded by :func:`fhir_bridge.mapping.tables.load_tables` with the same strict rules as the other
mapping files; a broken entry raises ``MappingError`` naming the file and the measure.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from fhir_bridge.mapping import tables as t


@dataclass(frozen=True)
class Mcid:
    """The MCID of one measure, in the measure's unit; ``value`` None = no verified value."""

    measure: str
    value: Decimal | None
    source: str = ""
    citation: str = ""
    reason: str = ""  # why there is no value


def load_mcids(folder: Path, measures: Collection[str]) -> dict[str, Mcid]:
    """One entry per measure key, no more and no fewer."""
    data, where = t._read_yaml(folder, "mcid", "mcid")
    t._fields(data, where, required={"mcid"})
    raw = data["mcid"]
    if not isinstance(raw, dict):
        raise where.fail("expected a mapping of measure keys")
    unknown = sorted(str(k) for k in raw if k not in measures)
    if unknown:
        raise where.at(unknown[0]).fail("not a measure of measures.yaml")
    missing = sorted(set(measures) - raw.keys())
    if missing:
        raise where.at(missing[0]).fail(
            "no entry: give a value with its source, or null with a reason"
        )
    return {key: _entry(key, raw[key], where.at(key)) for key in measures}


def _entry(key: str, raw: object, where: t._Where) -> Mcid:
    fields = t._fields(raw, where, required={"value"}, optional={"source", "citation", "reason"})
    if fields["value"] is None:
        if "source" in fields or "citation" in fields:
            raise where.fail("a null value takes a reason, not a source")
        return Mcid(key, None, reason=t._text(fields.get("reason"), where.at("reason")))
    value = t._number(fields["value"], where.at("value"))
    if value <= 0:
        raise where.at("value").fail(f"{value} must be above 0")
    if "reason" in fields:
        raise where.at("reason").fail("a value takes a source and a citation, not a reason")
    return Mcid(
        key,
        value,
        source=t._url(fields.get("source"), where.at("source")),
        citation=t._text(fields.get("citation"), where.at("citation")),
    )
