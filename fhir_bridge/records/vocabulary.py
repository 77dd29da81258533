"""The clinic vocabulary the record schema checks against, decoupled from the mapping tables.

``schemas.py`` needs only the keys and the measure rules; ``Vocabulary.from_tables`` derives them
from ``fhir_bridge.mapping.tables.MappingTables`` so the schema never imports the mappings.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_bridge.mapping.tables import MappingTables


@dataclass(frozen=True)
class MeasureRule:
    """What a measure accepts: its range, whether whole numbers only, its UCUM unit, sides."""

    minimum: Decimal
    maximum: Decimal
    integer: bool
    unit: str  # UCUM code, e.g. "deg" or "{score}"
    lateral: bool  # takes left / right / bilateral without a body site


@dataclass(frozen=True)
class Vocabulary:
    """The keys a record may use (techniques, body sites, lateralities, measures)."""

    techniques: frozenset[str]
    body_sites: frozenset[str]
    lateral_body_sites: frozenset[str]
    lateralities: frozenset[str]
    measures: dict[str, MeasureRule]

    @classmethod
    def from_tables(cls, tables: MappingTables) -> Vocabulary:
        """The vocabulary of the loaded ``mappings/`` tables."""
        return cls(
            techniques=frozenset(tables.techniques),
            body_sites=frozenset(tables.body_sites),
            lateral_body_sites=frozenset(k for k, s in tables.body_sites.items() if s.lateral),
            lateralities=frozenset(tables.lateralities),
            measures={
                key: MeasureRule(
                    minimum=Decimal(m.minimum),
                    maximum=Decimal(m.maximum),
                    integer=m.integer,
                    unit=m.unit.code,
                    lateral=m.lateral,
                )
                for key, m in tables.measures.items()
            },
        )
