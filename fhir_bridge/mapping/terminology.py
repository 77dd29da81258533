"""The mapping tables published as FHIR R4 CodeSystem and ConceptMap resources, and $translate.

Pure: plain dicts built from :class:`MappingTables`, nothing read or cached. One CodeSystem per
clinic vocabulary; one ConceptMap per (vocabulary, standard code system) pair. A clinic code
with no verified standard code is listed as ``unmatched`` so a reader sees it was considered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhir_bridge.mapping.tables import CPT, LOINC, SNOMED, Code, MappingTables, Measure, Technique

UNMATCHED = "unmatched"
#: equivalences that do not count as a translation (R4 $translate ``result``)
NO_MATCH = frozenset({UNMATCHED, "disjoint"})
TARGET_NAMES = {CPT: "CPT", SNOMED: "SNOMED CT", LOINC: "LOINC"}


@dataclass(frozen=True)
class _Concept:
    """One clinic concept as the resources need it."""

    code: str
    display: str
    definition: str
    properties: tuple[dict[str, Any], ...] = ()


# --- CodeSystem ---------------------------------------------------------------------------


def code_systems(tables: MappingTables) -> list[dict[str, Any]]:
    """One CodeSystem per clinic vocabulary (techniques, body sites, lateralities, measures)."""
    s = tables.systems
    return [
        _code_system(
            tables,
            s.technique,
            "Massage techniques",
            "Massage techniques (modalities) the clinic documents per treatment.",
            [
                _property("timed", "boolean", "Billed in 15-minute units (8-minute rule)"),
                _property("billing-code", "Coding", "Proposed billing code (CPT)"),
            ],
            [_technique_concept(t) for t in tables.techniques.values()],
        ),
        _code_system(
            tables,
            s.body_site,
            "Massage body sites",
            "Body sites the clinic treats or measures.",
            [_property("lateral", "boolean", "Left, right or bilateral can qualify this site")],
            [
                _Concept(b.key, b.display, b.definition, (_value("lateral", b.lateral),))
                for b in tables.body_sites.values()
            ],
        ),
        _code_system(
            tables,
            s.laterality,
            "Massage lateralities",
            "Sides of the body a body site or measurement refers to.",
            [],
            [_Concept(x.key, x.display, x.definition) for x in tables.lateralities.values()],
        ),
        _code_system(
            tables,
            s.measure,
            "Massage assessment measures",
            "What the clinic measures before and after treatment, with unit and valid range.",
            _MEASURE_PROPERTIES,
            [_measure_concept(m) for m in tables.measures.values()],
        ),
    ]


_MEASURE_PROPERTIES = [
    {"code": "unit", "type": "Coding", "description": "UCUM unit of the value"},
    {"code": "minimum", "type": "decimal", "description": "Lowest valid value"},
    {"code": "maximum", "type": "decimal", "description": "Highest valid value"},
    {"code": "integer", "type": "boolean", "description": "Only whole numbers are valid"},
    {"code": "lateral", "type": "boolean", "description": "Measured per side"},
    {"code": "higher-is-better", "type": "boolean", "description": "A rise is an improvement"},
    {"code": "profile", "type": "string", "description": "US Core Observation profile"},
]


def _property(code: str, type_: str, description: str) -> dict[str, str]:
    return {"code": code, "type": type_, "description": description}


def _value(code: str, value: Any) -> dict[str, Any]:
    """A concept property value, typed by the Python value (bool, Decimal, str, Coding dict)."""
    if isinstance(value, bool):
        return {"code": code, "valueBoolean": value}
    if isinstance(value, dict):
        return {"code": code, "valueCoding": value}
    if isinstance(value, str):
        return {"code": code, "valueString": value}
    return {"code": code, "valueDecimal": value}


def _technique_concept(t: Technique) -> _Concept:
    props = [_value("timed", t.timed)]
    if t.billing is not None:
        props.append(_value("billing-code", t.billing.coding()))
    return _Concept(t.key, t.display, t.definition, tuple(props))


def _measure_concept(m: Measure) -> _Concept:
    unit = {"system": m.unit.system, "code": m.unit.code, "display": m.unit.display}
    props = (
        _value("unit", unit),
        _value("minimum", m.minimum),
        _value("maximum", m.maximum),
        _value("integer", m.integer),
        _value("lateral", m.lateral),
        _value("higher-is-better", m.higher_is_better),
        _value("profile", m.profile),
    )
    return _Concept(m.key, m.display, m.definition, props)


def _code_system(
    tables: MappingTables,
    url: str,
    title: str,
    description: str,
    properties: list[dict[str, str]],
    concepts: list[_Concept],
) -> dict[str, Any]:
    resource_id = url.rsplit("/", 1)[1]
    resource: dict[str, Any] = {
        "resourceType": "CodeSystem",
        "id": resource_id,
        "url": url,
        **_version(tables),
        "name": _pascal(resource_id),
        "title": title,
        "status": "active",
        "experimental": False,
        "description": description,
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
    }
    if properties:
        resource["property"] = properties
    resource["concept"] = [_concept_json(c) for c in concepts]
    return resource


def _concept_json(c: _Concept) -> dict[str, Any]:
    concept: dict[str, Any] = {"code": c.code, "display": c.display}
    if c.definition:
        concept["definition"] = c.definition
    if c.properties:
        concept["property"] = list(c.properties)
    return concept


# --- ConceptMap ---------------------------------------------------------------------------


def concept_maps(tables: MappingTables) -> list[dict[str, Any]]:
    """ConceptMaps from the clinic vocabularies to CPT, SNOMED CT and LOINC."""
    s = tables.systems
    techniques = tables.techniques.values()
    specs: list[tuple[str, str, str, str, list[tuple[str, str, Code | None]]]] = [
        (
            "technique-to-cpt",
            "Massage technique to CPT",
            s.technique,
            CPT,
            [(x.key, x.display, x.billing) for x in techniques],
        ),
        (
            "technique-to-snomed",
            "Massage technique to SNOMED CT",
            s.technique,
            SNOMED,
            [(x.key, x.display, x.snomed) for x in techniques],
        ),
        (
            "body-site-to-snomed",
            "Body site to SNOMED CT",
            s.body_site,
            SNOMED,
            [(x.key, x.display, x.snomed) for x in tables.body_sites.values()],
        ),
        (
            "laterality-to-snomed",
            "Laterality to SNOMED CT",
            s.laterality,
            SNOMED,
            [(x.key, x.display, x.snomed) for x in tables.lateralities.values()],
        ),
        (
            "measure-to-loinc",
            "Assessment measure to LOINC",
            s.measure,
            LOINC,
            [(x.key, x.display, x.loinc) for x in tables.measures.values()],
        ),
    ]
    return [_concept_map(tables, *spec) for spec in specs]


def _concept_map(
    tables: MappingTables,
    resource_id: str,
    title: str,
    source: str,
    target: str,
    items: Iterable[tuple[str, str, Code | None]],
) -> dict[str, Any]:
    return {
        "resourceType": "ConceptMap",
        "id": resource_id,
        "url": f"{tables.systems.canonical_base}/ConceptMap/{resource_id}",
        **_version(tables),
        "name": _pascal(resource_id),
        "title": title,
        "status": "active",
        "experimental": False,
        "description": (
            f"{title}. Only codes verified in a cited source are mapped; the others are "
            "'unmatched' and travel as the clinic code and text."
        ),
        "group": [
            {
                "source": source,
                "target": target,
                "element": [_element(key, display, code, target) for key, display, code in items],
            }
        ],
    }


def _element(key: str, display: str, code: Code | None, target: str) -> dict[str, Any]:
    if code is None:
        comment = f"No verified {TARGET_NAMES.get(target, target)} code for this concept."
        return {
            "code": key,
            "display": display,
            "target": [{"equivalence": UNMATCHED, "comment": comment}],
        }
    mapped: dict[str, Any] = {
        "code": code.code,
        "display": code.display,
        "equivalence": code.equivalence,
    }
    comment = " ".join(part for part in (code.note, f"Source: {code.source}") if part)
    mapped["comment"] = comment
    return {"code": key, "display": display, "target": [mapped]}


def _version(tables: MappingTables) -> dict[str, str]:
    return {"version": tables.systems.version} if tables.systems.version else {}


def _pascal(resource_id: str) -> str:
    """``technique-to-cpt`` -> ``TechniqueToCpt`` (a computable ``name``)."""
    return "".join(part[:1].upper() + part[1:] for part in resource_id.replace(".", "-").split("-"))


# --- $translate ---------------------------------------------------------------------------


def translate(
    tables: MappingTables,
    *,
    system: str,
    code: str,
    target_system: str | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Answer ``ConceptMap/$translate`` for ``system|code`` as a FHIR ``Parameters`` resource."""
    maps = [cm for cm in concept_maps(tables) if url is None or cm["url"] == url]
    if not maps:
        return _parameters(False, f"No ConceptMap with url {url}", [])
    groups = [
        (cm["url"], g)
        for cm in maps
        for g in cm["group"]
        if g["source"] == system and target_system in (None, g["target"])
    ]
    if not groups:
        towards = f" to {target_system}" if target_system else ""
        return _parameters(False, f"No ConceptMap translates from {system}{towards}", [])
    found = [
        _match(map_url, g["target"], t)
        for map_url, g in groups
        for element in g["element"]
        if element["code"] == code
        for t in element["target"]
    ]
    return _outcome(system, code, found)


def _outcome(system: str, code: str, found: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    if not found:
        return _parameters(False, f"Code {code} is not defined in {system}", [])
    real = [part for equivalence, part in found if equivalence not in NO_MATCH]
    if real:
        return _parameters(True, f"{len(real)} match(es) for {system}|{code}", real)
    return _parameters(
        False,
        f"{system}|{code} has no verified code in the target system; send the clinic code",
        [part for _, part in found],
    )


def _match(map_url: str, target_system: str, target: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    equivalence = target["equivalence"]
    parts: list[dict[str, Any]] = [{"name": "equivalence", "valueCode": equivalence}]
    if "code" in target:
        coding = {"system": target_system, "code": target["code"], "display": target["display"]}
        parts.append({"name": "concept", "valueCoding": coding})
    parts.append({"name": "source", "valueUri": map_url})
    return equivalence, {"name": "match", "part": parts}


def _parameters(result: bool, message: str, matches: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "result", "valueBoolean": result},
            {"name": "message", "valueString": message},
            *matches,
        ],
    }
