"""CodeSystem / ConceptMap resources built from the tables, and $translate answers."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.conceptmap import ConceptMap
from fhir.resources.R4B.parameters import Parameters

from fhir_bridge.mapping.tables import CPT, LOINC, SNOMED, MappingTables, load_tables
from fhir_bridge.mapping.terminology import code_systems, concept_maps, translate

BASE = "http://fhir-bridge.org/fhir"
TECHNIQUE = f"{BASE}/CodeSystem/massage-technique"
MEASURE = f"{BASE}/CodeSystem/massage-measure"


@pytest.fixture(scope="module")
def tables() -> MappingTables:
    return load_tables()


def _by_id(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in resources}


def _params(body: dict[str, Any]) -> dict[str, Any]:
    """result, message and the list of matches (each a dict of its parts)."""
    Parameters.model_validate(body)
    out: dict[str, Any] = {"match": []}
    for p in body["parameter"]:
        if p["name"] == "match":
            out["match"].append({part["name"]: _value(part) for part in p["part"]})
        else:
            out[p["name"]] = _value(p)
    return out


def _value(param: dict[str, Any]) -> Any:
    return next(v for k, v in param.items() if k.startswith("value"))


# --- CodeSystem -------------------------------------------------------------------------------


def test_code_systems_validate_and_are_complete(tables: MappingTables) -> None:
    resources = _by_id(code_systems(tables))
    assert set(resources) == {
        "massage-technique",
        "massage-body-site",
        "massage-laterality",
        "massage-measure",
    }
    sizes = {
        "massage-technique": tables.techniques,
        "massage-body-site": tables.body_sites,
        "massage-laterality": tables.lateralities,
        "massage-measure": tables.measures,
    }
    for resource_id, resource in resources.items():
        CodeSystem.model_validate(resource)
        assert resource["url"] == f"{BASE}/CodeSystem/{resource_id}"
        assert resource["status"] == "active"
        assert resource["content"] == "complete"
        assert resource["caseSensitive"] is True
        keys = [c["code"] for c in resource["concept"]]
        assert keys == list(sizes[resource_id])
        assert resource["count"] == len(keys)


def test_measure_concepts_carry_unit_and_range(tables: MappingTables) -> None:
    measures = _by_id(code_systems(tables))["massage-measure"]
    pain = next(c for c in measures["concept"] if c["code"] == "pain_nrs")
    props = {p["code"]: _value(p) for p in pain["property"]}
    assert props["unit"] == {
        "system": "http://unitsofmeasure.org",
        "code": "{score}",
        "display": "score",
    }
    assert (props["minimum"], props["maximum"]) == (0, 10)
    assert props["integer"] is True
    assert props["higher-is-better"] is False
    declared = {p["code"] for p in measures["property"]}
    assert set(props) <= declared


def test_technique_concepts_carry_billing_code(tables: MappingTables) -> None:
    techniques = _by_id(code_systems(tables))["massage-technique"]
    concepts = {
        c["code"]: {p["code"]: _value(p) for p in c["property"]} for c in techniques["concept"]
    }
    assert concepts["swedish_massage"]["billing-code"]["code"] == "97124"
    assert concepts["swedish_massage"]["timed"] is True
    assert "billing-code" not in concepts["cupping"]


# --- ConceptMap -------------------------------------------------------------------------------


def test_concept_maps_validate(tables: MappingTables) -> None:
    maps = _by_id(concept_maps(tables))
    assert set(maps) == {
        "technique-to-cpt",
        "technique-to-snomed",
        "body-site-to-snomed",
        "laterality-to-snomed",
        "measure-to-loinc",
    }
    for resource_id, resource in maps.items():
        ConceptMap.model_validate(resource)
        assert resource["url"] == f"{BASE}/ConceptMap/{resource_id}"


def _elements(cm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (group,) = cm["group"]
    return {e["code"]: e["target"][0] for e in group["element"]}


def test_technique_to_cpt(tables: MappingTables) -> None:
    cm = _by_id(concept_maps(tables))["technique-to-cpt"]
    assert (cm["group"][0]["source"], cm["group"][0]["target"]) == (TECHNIQUE, CPT)
    targets = _elements(cm)
    assert targets["swedish_massage"]["code"] == "97124"
    assert targets["swedish_massage"]["equivalence"] == "wider"
    assert targets["muscle_energy_technique"]["equivalence"] == "relatedto"
    assert "97112" in targets["muscle_energy_technique"]["comment"]
    assert targets["cupping"] == {
        "equivalence": "unmatched",
        "comment": "No verified CPT code for this concept.",
    }


def test_every_key_is_listed_even_without_a_code(tables: MappingTables) -> None:
    maps = _by_id(concept_maps(tables))
    assert set(_elements(maps["body-site-to-snomed"])) == set(tables.body_sites)
    assert set(_elements(maps["measure-to-loinc"])) == set(tables.measures)
    assert _elements(maps["body-site-to-snomed"])["jaw"]["equivalence"] == "unmatched"
    assert _elements(maps["measure-to-loinc"])["pain_nrs"]["code"] == "72514-3"


# --- $translate -------------------------------------------------------------------------------


def test_translate_to_cpt(tables: MappingTables) -> None:
    answer = _params(
        translate(tables, system=TECHNIQUE, code="trigger_point_therapy", target_system=CPT)
    )
    assert answer["result"] is True
    (match,) = answer["match"]
    assert match["equivalence"] == "wider"
    assert match["concept"]["code"] == "97140"
    assert match["concept"]["system"] == CPT
    assert match["source"] == f"{BASE}/ConceptMap/technique-to-cpt"


def test_translate_without_target_searches_every_map(tables: MappingTables) -> None:
    answer = _params(translate(tables, system=TECHNIQUE, code="cupping"))
    assert answer["result"] is True
    assert [m["concept"]["system"] for m in answer["match"]] == [SNOMED]


def test_translate_unmatched_is_not_a_result(tables: MappingTables) -> None:
    answer = _params(translate(tables, system=TECHNIQUE, code="cupping", target_system=CPT))
    assert answer["result"] is False
    assert answer["match"] == [
        {"equivalence": "unmatched", "source": f"{BASE}/ConceptMap/technique-to-cpt"}
    ]


def test_translate_measure_to_loinc_by_url(tables: MappingTables) -> None:
    url = f"{BASE}/ConceptMap/measure-to-loinc"
    answer = _params(translate(tables, system=MEASURE, code="oswestry_disability_index", url=url))
    assert answer["result"] is True
    assert answer["match"][0]["concept"] == {
        "system": LOINC,
        "code": "97909-6",
        "display": "Oswestry disability index score ODI",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"system": TECHNIQUE, "code": "reiki"}, "not defined"),
        ({"system": CPT, "code": "97124"}, "No ConceptMap translates from"),
        ({"system": TECHNIQUE, "code": "cupping", "target_system": LOINC}, "No ConceptMap"),
        (
            {"system": TECHNIQUE, "code": "cupping", "url": f"{BASE}/ConceptMap/nope"},
            "No ConceptMap",
        ),
    ],
)
def test_translate_failures(tables: MappingTables, kwargs: dict[str, str], message: str) -> None:
    answer = _params(translate(tables, **kwargs))
    assert answer["result"] is False
    assert message in answer["message"]
    assert answer["match"] == []
