"""The inbound boundary of session records: every rule yields a precise, PHI-free problem."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_bridge.mapping.tables import (
    BodySite,
    ClinicCodeSystems,
    Code,
    Laterality,
    MappingTables,
    Measure,
    Technique,
    Unit,
    load_tables,
)
from fhir_bridge.records.errors import Problem, RecordInvalid, to_operation_outcome
from fhir_bridge.records.model import SessionRecord
from fhir_bridge.records.openapi import EXAMPLE_RECORD
from fhir_bridge.records.schemas import load_session
from fhir_bridge.records.vocabulary import MeasureRule, Vocabulary

# The contract example (contracts/session.md), verbatim; the OpenAPI document shows it too.
EXAMPLE: dict[str, Any] = EXAMPLE_RECORD

TECHNIQUES = [
    "swedish_massage",
    "deep_tissue_massage",
    "manual_lymphatic_drainage",
    "muscle_energy_technique",
    "cupping",
    "trigger_point_therapy",
    "myofascial_release",
]
BODY_SITES = [
    "head", "jaw", "neck", "cervical_spine", "upper_trapezius", "shoulder", "upper_back",
    "thoracic_spine", "lower_back", "lumbar_spine", "hip", "gluteal", "thigh", "knee", "calf",
    "foot", "upper_arm", "forearm", "hand", "chest", "abdomen",
]  # fmt: skip
LATERAL_SITES = [
    "calf", "chest", "foot", "forearm", "gluteal", "hand", "hip", "jaw", "knee", "lower_back",
    "neck", "shoulder", "thigh", "upper_arm", "upper_back", "upper_trapezius",
]  # fmt: skip
# key: (minimum, maximum, integer, unit, lateral), as in mappings/measures.yaml
MEASURES: dict[str, tuple[int, int, bool, str, bool]] = {
    "pain_nrs": (0, 10, True, "{score}", False),
    "cervical_rotation_rom": (0, 180, False, "deg", True),
    "cervical_flexion_rom": (0, 180, False, "deg", False),
    "cervical_extension_rom": (0, 180, False, "deg", False),
    "cervical_lateral_flexion_rom": (0, 180, False, "deg", True),
    "shoulder_flexion_rom": (0, 180, False, "deg", True),
    "shoulder_abduction_rom": (0, 180, False, "deg", True),
    "shoulder_external_rotation_rom": (0, 180, False, "deg", True),
    "hip_flexion_rom": (0, 180, False, "deg", True),
    "lumbar_flexion_rom": (0, 180, False, "deg", False),
    "oswestry_disability_index": (0, 100, False, "{score}", False),
    "promis_physical_function_t": (10, 90, False, "{score}", False),
    "promis_sleep_disturbance_t": (10, 90, False, "{score}", False),
    "sleep_quality_nrs": (0, 10, True, "{score}", False),
    "adl_dressing_difficulty": (0, 4, True, "{score}", False),
    "adl_household_difficulty": (0, 4, True, "{score}", False),
}

VOCABULARY = Vocabulary(
    techniques=frozenset(TECHNIQUES),
    body_sites=frozenset(BODY_SITES),
    lateral_body_sites=frozenset(LATERAL_SITES),
    lateralities=frozenset({"left", "right", "bilateral"}),
    measures={
        key: MeasureRule(Decimal(lo), Decimal(hi), integer, unit, lateral)
        for key, (lo, hi, integer, unit, lateral) in MEASURES.items()
    },
)


def record(**changes: Any) -> dict[str, Any]:
    """A deep copy of the contract example with top-level fields replaced."""
    data = copy.deepcopy(EXAMPLE)
    data.update(changes)
    return data


def problems_of(payload: object) -> list[Problem]:
    with pytest.raises(RecordInvalid) as caught:
        load_session(payload, vocabulary=VOCABULARY)
    return caught.value.problems


def problem_at(payload: object, path: str) -> Problem:
    found = [p for p in problems_of(payload) if p.path == path]
    assert found, f"no problem at {path}: {problems_of(payload)}"
    return found[0]


# --- the contract example ----------------------------------------------------------------------


def test_contract_example_loads_cleanly() -> None:
    rec = load_session(copy.deepcopy(EXAMPLE), vocabulary=VOCABULARY)
    assert isinstance(rec, SessionRecord)
    assert rec.session_id == "MMC-2026-000123"
    assert rec.patient.given_names == ("Ana", "Lucia")
    assert rec.patient.birth_date == date(1979, 3, 14)
    assert rec.patient.coverage is not None
    assert rec.patient.coverage.member_id == "XQZ123456789"
    assert rec.referral is not None
    assert rec.referral.value == "SR-8891"
    assert rec.started_at.utcoffset() == timedelta(hours=-5)
    assert rec.ended_at - rec.started_at == timedelta(minutes=55)
    assert [t.minutes for t in rec.treatments] == [20, 15, 15]
    assert rec.treatments[1].laterality is None
    assert rec.assessments[2].value == Decimal(45)
    assert rec.assessments[2].at is None
    assert rec.goals[0].target == Decimal(70)
    assert rec.goals[0].due == date(2026, 12, 31)
    assert rec.notes is not None
    assert rec.notes.plan.startswith("Continue")
    assert rec.diagnoses == ("M54.2",)
    assert rec.extra == {}


def test_unknown_fields_are_kept_at_top_level_and_accepted_nested() -> None:
    data = record(clinic_location="Room 3")
    data["treatments"][0]["room_temperature"] = 21
    rec = load_session(data, vocabulary=VOCABULARY)
    assert rec.extra == {"clinic_location": "Room 3"}


def test_normalisations_are_lossless() -> None:
    data = record(diagnoses=["m542", "S134XXA", "M54.50"])
    data["treatments"][0]["minutes"] = Decimal("20.0")  # jsonio parses 20.0 as Decimal
    data["assessments"][2]["value"] = Decimal("45.50")
    rec = load_session(data, vocabulary=VOCABULARY)
    assert rec.diagnoses == ("M54.2", "S13.4XXA", "M54.50")
    assert rec.treatments[0].minutes == 20
    assert str(rec.assessments[2].value) == "45.50"


def test_retraction_needs_no_treatments() -> None:
    data = record(status="entered-in-error")
    del data["treatments"]
    assert load_session(data, vocabulary=VOCABULARY).treatments == ()


# --- one case per rule ---------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def put(path: str, value: Any) -> Mutation:
    """Set (or with ``...``, delete) a value at a dotted path like ``treatments.2.minutes``."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is ...:
            del node[key]
        elif isinstance(node, list) and key == len(node):
            node.append(value)
        else:
            node[key] = value

    return mutate


class Rule(NamedTuple):
    """One rule: set ``where`` (dotted; ``...`` deletes) to ``value``; expect a problem there."""

    name: str
    where: str
    value: Any
    code: str  # FHIR issue type
    fragment: str  # part of the message
    at: str | None = None  # the problem's path when it is not ``where``

    def path(self) -> str:
        text = ""
        for part in self.where.split("."):
            text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
        return self.at or text


RULES: list[Rule] = [
    Rule("session_id missing", "session_id", ..., "required", "required"),
    Rule("session_id charset", "session_id", "MMC 2026/1", "value", "A-Z a-z 0-9"),
    Rule("session_id too long", "session_id", "A" * 65, "value", "1-64"),
    Rule("session_id newline", "session_id", "MMC-1\n", "value", "1-64"),
    Rule("status missing", "status", ..., "required", "required"),
    Rule("status unknown", "status", "draft", "code-invalid", "allowed"),
    Rule("patient missing", "patient", ..., "required", "required"),
    Rule("patient is a list", "patient", [], "invalid", "JSON object"),
    Rule("mrn missing", "patient.mrn", ..., "required", "required"),
    Rule("mrn null", "patient.mrn", None, "required", "null"),
    Rule("mrn a number", "patient.mrn", 1001, "invalid", "JSON string"),
    Rule("mrn blank", "patient.mrn", "  ", "value", "blank"),
    Rule("birth_date future", "patient.birth_date", "2999-01-01", "value", "future"),
    Rule("birth_date not a date", "patient.birth_date", "14/03/1979", "invalid", "YYYY-MM-DD"),
    Rule("birth_date impossible", "patient.birth_date", "1979-02-30", "value", "calendar"),
    Rule("sex unknown", "patient.sex", "f", "code-invalid", "allowed"),
    Rule("given_names a string", "patient.given_names", "Ana", "invalid", "JSON array"),
    Rule("given_names item", "patient.given_names.1", 7, "invalid", "JSON string"),
    Rule("member_id missing", "patient.coverage.member_id", ..., "required", "required"),
    Rule("payer_id missing", "patient.coverage.payer_id", ..., "required", "required"),
    Rule("therapist missing", "therapist", ..., "required", "required"),
    Rule("npi missing", "therapist.npi", ..., "required", "required"),
    Rule("npi 9 digits", "therapist.npi", "123456789", "value", "10 digits"),
    Rule("npi check digit", "therapist.npi", "1234567890", "value", "check digit"),
    Rule("npi a number", "therapist.npi", 1234567893, "invalid", "JSON string"),
    Rule("referral system missing", "referral.system", ..., "required", "required"),
    Rule("referral value missing", "referral.value", ..., "required", "required"),
    Rule("referral system not a URI", "referral.system", "northside", "value", "URI"),
    Rule("started_at missing", "started_at", ..., "required", "required"),
    Rule("started_at no offset", "started_at", "2026-11-20T10:00:00", "value", "offset is missing"),
    Rule("started_at a date", "started_at", "2026-11-20", "invalid", "UTC offset"),
    Rule("started_at a number", "started_at", 1763650800, "invalid", "UTC offset"),
    Rule("ended_at impossible", "ended_at", "2026-11-31T10:55:00-05:00", "value", "real date-time"),
    Rule(
        "ended_at before started_at",
        "ended_at",
        "2026-11-20T09:55:00-05:00",
        "value",
        "before started_at",
    ),
    Rule("session over 8 hours", "ended_at", "2026-11-20T18:00:01-05:00", "value", "8 hours"),
    Rule("treatments missing", "treatments", ..., "required", "at least one"),
    Rule("treatments empty", "treatments", [], "required", "at least one"),
    Rule("treatments an object", "treatments", {"technique": "cupping"}, "invalid", "JSON array"),
    Rule("treatment null", "treatments.1", None, "required", "null"),
    Rule("minutes a string", "treatments.2.minutes", "15", "invalid", "whole number"),
    Rule("minutes a bool", "treatments.2.minutes", True, "invalid", "whole number"),
    Rule("minutes fractional", "treatments.2.minutes", 7.5, "invalid", "whole number"),
    Rule("minutes zero", "treatments.2.minutes", 0, "value", "1 to 120"),
    Rule("minutes over 120", "treatments.2.minutes", 121, "value", "1 to 120"),
    Rule(
        "minutes exceed session",
        "treatments.0.minutes",
        30,
        "value",
        "more than the session's 55",
        at="treatments",
    ),
    Rule(
        "technique unknown",
        "treatments.0.technique",
        "reiki",
        "code-invalid",
        "no entry for 'reiki' in mappings/ (techniques)",
    ),
    Rule("technique missing", "treatments.0.technique", ..., "required", "required"),
    Rule("body_site unknown", "treatments.1.body_site", "elbow", "code-invalid", "(body_sites)"),
    Rule("laterality unknown", "treatments.0.laterality", "up", "code-invalid", "(lateralities)"),
    Rule("laterality without sides", "treatments.1.laterality", "left", "value", "has no sides"),
    Rule(
        "laterality without body_site",
        "treatments.0.body_site",
        ...,
        "value",
        "needs a body_site",
        at="treatments[0].laterality",
    ),
    Rule("phase unknown", "assessments.0.phase", "during", "code-invalid", "allowed"),
    Rule("measure unknown", "assessments.0.measure", "vas", "code-invalid", "(measures)"),
    Rule("value a string", "assessments.0.value", "7", "invalid", "number"),
    Rule("value a bool", "assessments.0.value", False, "invalid", "number"),
    Rule("value null", "assessments.0.value", None, "required", "null"),
    Rule("value over maximum", "assessments.0.value", 11, "value", "between 0 and 10"),
    Rule("value below minimum", "assessments.4.value", -1, "value", "between 0 and 100"),
    Rule("value not integer", "assessments.0.value", Decimal("6.5"), "value", "whole numbers"),
    Rule("unit mismatch", "assessments.2.unit", "degrees", "code-invalid", "'deg'"),
    Rule("measure without sides", "assessments.4.laterality", "left", "value", "has sides"),
    Rule(
        "at without offset", "assessments.0.at", "2026-11-20T10:02:00", "value", "offset is missing"
    ),
    Rule(
        "at outside the day",
        "assessments.1.at",
        "2026-11-20T13:00:00-05:00",
        "value",
        "within 2 hours",
    ),
    Rule(
        "assessment duplicate",
        "assessments.3.phase",
        "pre",
        "value",
        "duplicates assessments[2]",
        at="assessments[3]",
    ),
    Rule("goal_id missing", "goals.0.goal_id", ..., "required", "required"),
    Rule(
        "goal_id duplicate",
        "goals.1",
        {"goal_id": "G1", "description": "Sleep through"},
        "value",
        "goals[0]",
        at="goals[1].goal_id",
    ),
    Rule("description missing", "goals.0.description", ..., "required", "required"),
    Rule("description too long", "goals.0.description", "x" * 501, "value", "1-500"),
    Rule("goal measure unknown", "goals.0.measure", "grip", "code-invalid", "(measures)"),
    Rule("target out of range", "goals.0.target", 200, "value", "between 0 and 180"),
    Rule(
        "target without measure",
        "goals.0.measure",
        ...,
        "required",
        "needs a measure",
        at="goals[0].target",
    ),
    Rule("due not a date", "goals.0.due", "end of year", "invalid", "YYYY-MM-DD"),
    Rule(
        "diagnosis header",
        "diagnoses",
        ["M54.5"],
        "code-invalid",
        "not a billable ICD-10-CM code",
        at="diagnoses[0]",
    ),
    Rule(
        "diagnosis unknown",
        "diagnoses",
        ["M54.2", "Q99.99"],
        "code-invalid",
        "not an ICD-10-CM code",
        at="diagnoses[1]",
    ),
    Rule(
        "diagnosis malformed",
        "diagnoses",
        ["neck pain"],
        "code-invalid",
        "ICD-10-CM",
        at="diagnoses[0]",
    ),
    Rule("diagnoses a string", "diagnoses", "M54.2", "invalid", "JSON array"),
    Rule("notes a string", "notes", "see chart", "invalid", "JSON object"),
    Rule("note a number", "notes.plan", 2, "invalid", "JSON string"),
]


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.name) for r in RULES])
def test_rule(rule: Rule) -> None:
    data = copy.deepcopy(EXAMPLE)
    put(rule.where, rule.value)(data)
    problem = problem_at(data, rule.path())
    assert problem.code == rule.code
    assert rule.fragment in problem.diagnostics()


def test_vocabulary_problem_names_value_and_allowed_keys() -> None:
    data = record()
    data["treatments"][0]["technique"] = "reiki"
    problem = problem_at(data, "treatments[0].technique")
    assert problem.value == "reiki"
    assert problem.message == "no entry for 'reiki' in mappings/ (techniques)"
    assert problem.allowed == tuple(sorted(TECHNIQUES))


def test_range_problem_echoes_the_value() -> None:
    data = record()
    data["assessments"][0]["value"] = 11
    assert problem_at(data, "assessments[0].value").value == Decimal(11)


def test_header_diagnosis_suggests_billable_subcodes() -> None:
    problem = problem_at(record(diagnoses=["M54.5"]), "diagnoses[0]")
    assert problem.allowed is not None
    assert "M54.50" in problem.allowed


def test_all_problems_are_reported_at_once() -> None:
    data = record(session_id="bad id", started_at="2026-11-20T10:00:00")
    data["treatments"][2]["minutes"] = "15"
    data["treatments"][0]["technique"] = "reiki"
    data["assessments"][0]["value"] = 11
    data["patient"]["coverage"] = {"payer_id": "ACME-HEALTH"}
    data["goals"][0]["due"] = "soon"
    paths = [p.path for p in problems_of(data)]
    assert paths == [
        "session_id",
        "patient.coverage.member_id",
        "started_at",
        "treatments[0].technique",
        "treatments[2].minutes",
        "assessments[0].value",
        "goals[0].due",
    ]


def test_a_bad_field_does_not_cause_follow_on_problems() -> None:
    data = record()
    data["treatments"][0]["body_site"] = 3  # wrong type: its laterality cannot be judged
    data["assessments"][2]["measure"] = None
    paths = [p.path for p in problems_of(data)]
    assert paths == ["treatments[0].body_site", "assessments[2].measure"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("patient.mrn", 1001),
        ("patient.family_name", 7),
        ("patient.given_names.0", 7),
        ("patient.birth_date", "2999-12-31"),
        ("patient.sex", "F-Rivera"),
        ("patient.coverage.member_id", ""),
        ("referral.value", ""),
        ("notes.subjective", 42),
        ("goals.0.description", ""),
        ("started_at", "2026-11-21T09:13:00"),
    ],
)
def test_problems_never_echo_phi(path: str, value: object) -> None:
    data = copy.deepcopy(EXAMPLE)
    put(path, value)(data)
    for problem in problems_of(data):
        assert problem.value is None
        assert str(value) not in problem.message or str(value) == ""


def test_not_an_object_is_a_problem_at_the_root() -> None:
    for payload in (None, [], "session", 3, True):
        assert [(p.path, p.code) for p in problems_of(payload)] == [("$", "invalid")]


def test_operation_outcome() -> None:
    data = record()
    data["treatments"][0]["technique"] = "reiki"
    del data["patient"]["mrn"]
    outcome = to_operation_outcome(problems_of(data))
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0] == {
        "severity": "error",
        "code": "required",
        "diagnostics": "is required",
        "expression": ["patient.mrn"],
    }
    assert outcome["issue"][1]["code"] == "code-invalid"
    assert outcome["issue"][1]["diagnostics"].startswith(
        "no entry for 'reiki' in mappings/ (techniques); allowed: cupping, deep_tissue_massage"
    )


def test_record_invalid_needs_problems() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RecordInvalid([])
    assert "treatments" in str(RecordInvalid([Problem("treatments", "x")]))


# --- Vocabulary.from_tables ----------------------------------------------------------------------


def _code(code: str) -> Code:
    return Code("http://example.org", code, code, "https://example.org")


def test_vocabulary_from_tables() -> None:
    deg = Unit("deg", "degree")
    tables = MappingTables(
        systems=ClinicCodeSystems("https://x", "https://x/t", "https://x/b", "https://x/l", "https://x/m"),
        techniques={"cupping": Technique("cupping", "Cupping", None, None, True)},
        body_sites={
            "neck": BodySite("neck", "Neck", None, True),
            "head": BodySite("head", "Head", None, False),
        },
        lateralities={"left": Laterality("left", "Left", None)},
        measures={
            "cervical_rotation_rom": Measure(
                "cervical_rotation_rom", "Rotation", None, deg, Decimal(0), Decimal(180),
                False, "http://p", (_code("exam"),), True, True,
            )
        },
    )  # fmt: skip
    vocab = Vocabulary.from_tables(tables)
    assert vocab.techniques == {"cupping"}
    assert vocab.body_sites == {"neck", "head"}
    assert vocab.lateral_body_sites == {"neck"}
    assert vocab.lateralities == {"left"}
    assert vocab.measures["cervical_rotation_rom"] == MeasureRule(
        Decimal(0), Decimal(180), False, "deg", True
    )


def test_shipped_mappings_cover_the_contract_and_accept_its_example() -> None:
    vocab = Vocabulary.from_tables(load_tables())
    assert vocab.techniques >= VOCABULARY.techniques
    assert vocab.body_sites >= VOCABULARY.body_sites
    assert vocab.lateralities >= VOCABULARY.lateralities
    assert set(vocab.measures) >= set(VOCABULARY.measures)
    rec = load_session(copy.deepcopy(EXAMPLE), vocabulary=vocab)
    assert rec.session_id == EXAMPLE["session_id"]


# --- never anything but RecordInvalid ------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["M54.2", "M54.5", "2026-11-20T10:30:00-05:00", "pre", "left", "neck", ""])
)


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    # a named function: Hypothesis reads a lambda's source to check it recurses, which can fail
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON_VALUES = st.recursive(
    JSON_SCALARS,
    _containers,
    max_leaves=20,
)


def _locations(node: Any, trail: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every (container path, key) of a JSON document."""
    found: list[tuple[Any, ...]] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        found.append((*trail, key))
        found.extend(_locations(child, (*trail, key)))
    return found


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        locations = _locations(data)
        if not locations:
            break
        *parents, key = draw(st.sampled_from(locations))
        node: Any = data
        for part in parents:
            node = node[part]
        if draw(st.booleans()):
            del node[key]
        else:
            node[key] = draw(JSON_VALUES)
    return data


def _accepts_or_reports(payload: object) -> None:
    result: object = None
    problems: list[Problem] = []
    try:
        result = load_session(payload, vocabulary=VOCABULARY)
    except RecordInvalid as exc:
        problems = exc.problems
    assert isinstance(result, SessionRecord) or problems
    assert all(p.path and isinstance(p.message, str) and p.message for p in problems)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_any_json_value_is_accepted_or_reported(payload: object) -> None:
    _accepts_or_reports(payload)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_records())
def test_any_mutated_record_is_accepted_or_reported(payload: dict[str, Any]) -> None:
    _accepts_or_reports(payload)


def test_started_and_ended_are_aware() -> None:
    rec = load_session(record(ended_at="2026-11-20T15:55:00Z"), vocabulary=VOCABULARY)
    assert isinstance(rec.ended_at, datetime)
    assert rec.ended_at.utcoffset() == timedelta(0)
