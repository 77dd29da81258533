"""Parsing FHIR search parameters into a SearchQuery, and refusing what the bridge cannot do."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fhir_bridge.fhir.outcome import FhirError
from fhir_bridge.fhir.search_query import (
    DateValue,
    Include,
    ReferenceValue,
    SortKey,
    StringValue,
    TokenValue,
    parse_search,
    split_or,
)

LOINC = "http://loinc.org"


def _one(resource_type, key, value, **kwargs):
    """The single criterion parsed from one parameter."""
    query = parse_search(resource_type, [(key, value)], **kwargs)
    assert len(query.criteria) == 1
    return query.criteria[0]


def _errors(resource_type, params, **kwargs):
    with pytest.raises(FhirError) as info:
        parse_search(resource_type, params, **kwargs)
    assert info.value.status == 400
    return info.value.issues


def _error(resource_type, key, value):
    issues = _errors(resource_type, [(key, value)])
    assert len(issues) == 1
    assert issues[0].severity == "error"
    return issues[0]


# --- tokens -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("72514-3", TokenValue(None, "72514-3", False)),
        (f"{LOINC}|72514-3", TokenValue(LOINC, "72514-3", True)),
        ("|72514-3", TokenValue(None, "72514-3", True)),
        (f"{LOINC}|", TokenValue(LOINC, None, True)),
        (r"a\|b", TokenValue(None, "a|b", False)),
        (r"sys|a\,b", TokenValue("sys", "a,b", True)),
        ("sys|a|b", TokenValue("sys", "a|b", True)),
    ],
)
def test_token_value_forms(value, expected):
    crit = _one("Observation", "code", value)
    assert (crit.name, crit.type, crit.modifier) == ("code", "token", None)
    assert crit.param is not None
    assert crit.param.name == "code"
    assert crit.values == (expected,)


def test_token_bar_alone_is_invalid():
    issue = _error("Observation", "code", "|")
    assert issue.code == "invalid"
    assert issue.expression == ("code",)


def test_token_comma_values_are_ored():
    crit = _one("Observation", "status", "final,amended")
    assert crit.values == (TokenValue(None, "final", False), TokenValue(None, "amended", False))


def test_token_not_modifier():
    crit = _one("Procedure", "status:not", "entered-in-error")
    assert crit.modifier == "not"
    assert crit.values == (TokenValue(None, "entered-in-error", False),)


def test_token_text_modifier_keeps_the_whole_value_as_text():
    crit = _one("Condition", "code:text", "back pain|lumbar")
    assert crit.modifier == "text"
    assert crit.values == (TokenValue(None, "back pain|lumbar", False),)


@pytest.mark.parametrize(
    ("resource_type", "name"),
    [
        ("Patient", "identifier"),
        ("ServiceRequest", "intent"),
        ("ServiceRequest", "category"),
        ("Condition", "clinical-status"),
        ("Goal", "lifecycle-status"),
        ("Task", "code"),
        ("Coverage", "status"),
    ],
)
def test_every_token_parameter_parses_system_and_code(resource_type, name):
    crit = _one(resource_type, name, "http://example.org|X-1")
    assert crit.type == "token"
    assert crit.values == (TokenValue("http://example.org", "X-1", True),)


# --- :missing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "key", "ptype"),
    [
        ("Observation", "code:missing", "token"),
        ("Observation", "based-on:missing", "reference"),
        ("Observation", "date:missing", "date"),
        ("Patient", "family:missing", "string"),
    ],
)
@pytest.mark.parametrize(("value", "missing"), [("true", True), ("false", False)])
def test_missing_modifier_on_every_type(resource_type, key, ptype, value, missing):
    crit = _one(resource_type, key, value)
    assert (crit.type, crit.modifier, crit.missing, crit.values) == (ptype, "missing", missing, ())


def test_missing_takes_only_true_or_false():
    assert _error("Observation", "code:missing", "yes").code == "invalid"


# --- references ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("patient", "Patient/p1", ReferenceValue("Patient", "p1", None)),
        ("patient", "p1", ReferenceValue("Patient", "p1", None)),  # the only target type
        ("subject", "Group/g1", ReferenceValue("Group", "g1", None)),
        ("subject:Patient", "p1", ReferenceValue("Patient", "p1", None)),
        ("subject:Patient", "Patient/p1", ReferenceValue("Patient", "p1", None)),
        ("based-on", "ServiceRequest/ref-1", ReferenceValue("ServiceRequest", "ref-1", None)),
        ("part-of", "Procedure/massage-1", ReferenceValue("Procedure", "massage-1", None)),
        (
            "subject",
            "https://ehr.example.org/fhir/Patient/123",
            ReferenceValue("Patient", "123", "https://ehr.example.org/fhir/Patient/123"),
        ),
        (
            "subject",
            "https://ehr.example.org/other",
            ReferenceValue(None, None, "https://ehr.example.org/other"),
        ),
    ],
)
def test_observation_reference_values(key, value, expected):
    crit = _one("Observation", key, value)
    assert crit.type == "reference"
    assert crit.values == (expected,)


def test_reference_type_modifier_is_kept():
    assert _one("Observation", "subject:Patient", "p1").modifier == "Patient"


@pytest.mark.parametrize(
    ("resource_type", "key", "value", "expected"),
    [
        (
            "ServiceRequest",
            "requester",
            "Practitioner/dr-1",
            ReferenceValue("Practitioner", "dr-1", None),
        ),
        ("Procedure", "based-on", "CarePlan/cp-1", ReferenceValue("CarePlan", "cp-1", None)),
        ("Coverage", "patient", "p1", ReferenceValue("Patient", "p1", None)),
        ("Coverage", "beneficiary", "p1", ReferenceValue("Patient", "p1", None)),
        ("Coverage", "payor", "Organization/payer", ReferenceValue("Organization", "payer", None)),
        ("Task", "owner", "Organization/clinic", ReferenceValue("Organization", "clinic", None)),
        (
            "Task",
            "requester",
            "PractitionerRole/r1",
            ReferenceValue("PractitionerRole", "r1", None),
        ),
        ("Task", "focus", "ServiceRequest/ref-1", ReferenceValue("ServiceRequest", "ref-1", None)),
        ("Task", "focus:ServiceRequest", "ref-1", ReferenceValue("ServiceRequest", "ref-1", None)),
        ("Task", "patient", "p1", ReferenceValue("Patient", "p1", None)),
        ("Task", "subject", "Patient/p1", ReferenceValue("Patient", "p1", None)),
        ("Goal", "subject", "Organization/o1", ReferenceValue("Organization", "o1", None)),
        ("PractitionerRole", "practitioner", "dr-1", ReferenceValue("Practitioner", "dr-1", None)),
        ("PractitionerRole", "organization", "o1", ReferenceValue("Organization", "o1", None)),
    ],
)
def test_reference_parameters_of_every_type(resource_type, key, value, expected):
    assert _one(resource_type, key, value).values == (expected,)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("patient", "Group/g1", "cannot refer to Group"),
        ("subject:Patient", "Group/g1", "does not match"),
        ("subject", "not a reference!", "not a reference"),
    ],
)
def test_bad_reference_values(key, value, fragment):
    issue = _error("Observation", key, value)
    assert issue.code == "invalid"
    assert fragment in issue.diagnostics


def test_a_bare_id_with_several_target_types_is_left_for_the_store_to_type():
    (value,) = _one("Observation", "subject", "p1").values
    assert value == ReferenceValue(None, "p1", None)
    (typed,) = _one("Observation", "patient", "p1").values  # one target type: typed at once
    assert typed == ReferenceValue("Patient", "p1", None)


def test_identifier_modifier_searches_reference_identifiers_as_tokens():
    crit = _one("Observation", "subject:identifier", "https://clinic.example.org/mrn|P-1")
    assert (crit.name, crit.type, crit.modifier) == ("subject", "token", "identifier")
    assert crit.values == (TokenValue("https://clinic.example.org/mrn", "P-1", True),)


@pytest.mark.parametrize(
    "key", ["subject:Practitioner", "patient:Group", "subject:not", "focus:Nope"]
)
def test_type_modifiers_outside_the_targets_are_unknown(key):
    resource_type = "Task" if key.startswith("focus") else "Observation"
    issue = _error(resource_type, key, "x1")
    assert issue.code == "not-supported"
    assert issue.expression == (key,)


# --- dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
def test_every_date_prefix(prefix):
    crit = _one("Observation", "date", f"{prefix}2026-11-20")
    assert crit.values == (DateValue(prefix, datetime(2026, 11, 20), datetime(2026, 11, 21)),)


def test_date_without_prefix_is_eq_and_offsets_become_utc():
    crit = _one("Procedure", "date", "2026-11-20T22:30:00-05:00")
    assert crit.values == (
        DateValue("eq", datetime(2026, 11, 21, 3, 30), datetime(2026, 11, 21, 3, 30, 1)),
    )


def test_date_without_offset_is_read_as_utc():
    crit = _one("Observation", "date", "ge2026-11-20T10:00:00")
    assert crit.values == (
        DateValue("ge", datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 10, 0, 1)),
    )


def test_date_range_as_two_and_criteria():
    query = parse_search("Observation", [("date", "ge2026-01"), ("date", "lt2026-02")])
    assert [c.values[0].prefix for c in query.criteria] == ["ge", "lt"]
    assert query.criteria[0].values[0].low == datetime(2026, 1, 1)
    assert query.criteria[1].values[0].high == datetime(2026, 3, 1)


@pytest.mark.parametrize(
    ("resource_type", "name"),
    [
        ("Patient", "birthdate"),
        ("ServiceRequest", "authored"),
        ("Procedure", "date"),
        ("Task", "authored-on"),
    ],
)
def test_every_date_parameter(resource_type, name):
    crit = _one(resource_type, name, "le1979")
    assert crit.type == "date"
    assert crit.values == (DateValue("le", datetime(1979, 1, 1), datetime(1980, 1, 1)),)


NOW = datetime(2026, 12, 1)


def test_ap_widens_the_date_by_a_tenth_of_its_distance_from_now():
    # 2016-12-01 starts 3652 days before now: the whole day widened by 365.2 days each side
    (value,) = parse_search("Observation", [("date", "ap2016-12-01")], now=NOW).criteria[0].values
    assert value.prefix == "ap"
    assert value.low == datetime(2016, 12, 1) - timedelta(days=365.2)
    assert value.high == datetime(2016, 12, 2) + timedelta(days=365.2)


def test_ap_for_today_is_about_today_and_future_dates_work_too():
    (today,) = parse_search("Observation", [("date", "ap2026-12-01")], now=NOW).criteria[0].values
    assert (today.low, today.high) == (datetime(2026, 11, 30, 21, 36), datetime(2026, 12, 2, 2, 24))
    (ahead,) = parse_search("Observation", [("date", "ap2036-12-01")], now=NOW).criteria[0].values
    assert ahead.low < datetime(2036, 12, 1) < datetime(2036, 12, 2) < ahead.high


def test_ap_at_the_calendars_edge_does_not_overflow():
    (value,) = parse_search("Patient", [("birthdate", "ap0001")], now=NOW).criteria[0].values
    assert value.low == datetime.min


@pytest.mark.parametrize("value", ["xx2026", "2026-13-01", "ge", "yesterday", "2026/11/20"])
def test_bad_dates_are_invalid(value):
    issue = _error("Observation", "date", value)
    assert issue.code == "invalid"
    assert issue.expression == ("date",)


# --- strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "key", "modifier"),
    [
        ("Patient", "name", None),
        ("Patient", "family:exact", "exact"),
        ("Patient", "given:contains", "contains"),
        ("Practitioner", "name", None),
        ("Organization", "name:contains", "contains"),
    ],
)
def test_string_parameters_and_modifiers(resource_type, key, modifier):
    crit = _one(resource_type, key, "Núñez")
    assert (crit.type, crit.modifier, crit.values) == ("string", modifier, (StringValue("Núñez"),))


def test_string_escapes_and_or():
    crit = _one("Organization", "name", r"Smith\, Jones & Co,Northside")
    assert crit.values == (StringValue("Smith, Jones & Co"), StringValue("Northside"))


@pytest.mark.parametrize("key", ["name:text", "family:not", "name:below"])
def test_unknown_string_modifiers(key):
    assert _error("Patient", key, "x").code == "not-supported"


# --- _id and _lastUpdated -----------------------------------------------------------------------


def test_id_values_are_strings():
    crit = _one("Patient", "_id", "p1,p-2.x")
    assert (crit.name, crit.param, crit.type) == ("_id", None, "special")
    assert crit.values == (StringValue("p1"), StringValue("p-2.x"))


def test_bad_id_is_invalid():
    assert _error("Patient", "_id", "no/slashes").code == "invalid"


def test_last_updated_is_a_date_criterion():
    crit = _one("Observation", "_lastUpdated", "gt2026-11-20T10:00:00.123Z")
    assert (crit.name, crit.param, crit.type) == ("_lastUpdated", None, "special")
    assert crit.values == (
        DateValue(
            "gt", datetime(2026, 11, 20, 10, 0, 0, 123000), datetime(2026, 11, 20, 10, 0, 0, 124000)
        ),
    )


@pytest.mark.parametrize("key", ["_id:missing", "_lastUpdated:missing", "_id:exact"])
def test_special_parameters_take_no_modifiers(key):
    assert _error("Patient", key, "true").code == "not-supported"


# --- AND / OR / empty / transport ----------------------------------------------------------------


def test_repeated_parameters_are_anded_and_keep_their_order():
    query = parse_search(
        "Observation", [("code", "a"), ("patient", "p1"), ("code", "b,c"), ("_id", "o1")]
    )
    assert [(c.name, len(c.values)) for c in query.criteria] == [
        ("code", 1),
        ("patient", 1),
        ("code", 2),
        ("_id", 1),
    ]


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a,b", ["a", "b"]),
        (r"a\,b", [r"a\,b"]),
        ("a\\\\,b", ["a\\\\", "b"]),  # an escaped backslash does not escape the comma
        ("a,", ["a", ""]),
    ],
)
def test_split_or_respects_escapes(value, parts):
    assert split_or(value) == parts


def test_empty_values_are_ignored():
    query = parse_search("Observation", [("code", ""), ("status", ","), ("date", "")])
    assert query.criteria == ()


def test_transport_parameters_are_ignored():
    query = parse_search("Patient", [("_format", "json"), ("_pretty", "true"), ("family", "x")])
    assert [c.name for c in query.criteria] == ["family"]
    assert query.issues == ()


# --- result parameters --------------------------------------------------------------------------


def test_defaults():
    query = parse_search("Patient", [])
    assert query.resource_type == "Patient"
    assert (query.count, query.sort, query.summary, query.elements, query.total, query.cursor) == (
        50,
        (),
        None,
        None,
        None,
        None,
    )
    assert query.includes == query.revincludes == query.issues == ()


@pytest.mark.parametrize(("value", "count"), [("0", 0), ("10", 10), ("1000", 1000)])
def test_count(value, count):
    query = parse_search("Patient", [("_count", value)])
    assert query.count == count
    assert query.issues == ()


def test_count_above_maximum_is_clamped_with_a_warning():
    query = parse_search("Patient", [("_count", "5000")])
    assert query.count == 1000
    assert [(i.severity, i.expression) for i in query.issues] == [("warning", ("_count",))]
    assert "1000" in query.issues[0].diagnostics


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "²"])
def test_bad_count(value):
    assert _error("Patient", "_count", value).code == "invalid"


def test_result_parameters_given_twice_are_invalid():
    issues = _errors(
        "Patient", [("_count", "5"), ("_count", "6"), ("_sort", "_id"), ("_sort", "_id")]
    )
    assert [i.expression for i in issues] == [("_count",), ("_sort",)]


@pytest.mark.parametrize(
    ("resource_type", "value", "keys"),
    [
        ("Patient", "_lastUpdated", (SortKey("_lastUpdated", False),)),
        ("Patient", "-_lastUpdated", (SortKey("_lastUpdated", True),)),
        ("Patient", "-_id", (SortKey("_id", True),)),
        ("Patient", "birthdate,-_id", (SortKey("birthdate", False), SortKey("_id", True))),
        ("Observation", "-date", (SortKey("date", True),)),
        ("ServiceRequest", "authored", (SortKey("authored", False),)),
        ("Task", "-authored-on", (SortKey("authored-on", True),)),
        ("Procedure", "date", (SortKey("date", False),)),
    ],
)
def test_sort(resource_type, value, keys):
    assert parse_search(resource_type, [("_sort", value)]).sort == keys


@pytest.mark.parametrize("value", ["family", "code", "-", "", "date,"])
def test_sort_only_by_dates_id_and_last_updated(value):
    issue = _error("Patient", "_sort", value)
    assert issue.code == "not-supported"
    assert "_lastUpdated" in issue.diagnostics


@pytest.mark.parametrize("value", ["true", "count", "data", "false"])
def test_summary(value):
    assert parse_search("Patient", [("_summary", value)]).summary == value


@pytest.mark.parametrize(("value", "code"), [("text", "not-supported"), ("all", "invalid")])
def test_unsupported_summary(value, code):
    assert _error("Patient", "_summary", value).code == code


def test_elements():
    query = parse_search("Patient", [("_elements", "name, birthDate,Patient.identifier,name")])
    assert query.elements == ("name", "birthDate", "identifier")


@pytest.mark.parametrize("value", ["", "name,", "name.family", "Observation.code", "1abc"])
def test_bad_elements(value):
    assert _error("Patient", "_elements", value).code == "invalid"


@pytest.mark.parametrize("value", ["none", "estimate", "accurate"])
def test_total(value):
    assert parse_search("Patient", [("_total", value)]).total == value


def test_bad_total():
    assert _error("Patient", "_total", "exact").code == "invalid"


def test_cursor_is_passed_through_untouched():
    assert parse_search("Patient", [("_cursor", "eyJzIjo1fQ")]).cursor == "eyJzIjo1fQ"


# --- _include / _revinclude -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "value", "include"),
    [
        ("Observation", "Observation:patient", Include("Observation", "patient", None)),
        (
            "Observation",
            "Observation:subject:Patient",
            Include("Observation", "subject", "Patient"),
        ),
        ("Task", "Task:focus", Include("Task", "focus", None)),
        ("Task", "Task:focus:ServiceRequest", Include("Task", "focus", "ServiceRequest")),
        (
            "PractitionerRole",
            "PractitionerRole:practitioner",
            Include("PractitionerRole", "practitioner", None),
        ),
    ],
)
def test_include(resource_type, value, include):
    assert parse_search(resource_type, [("_include", value)]).includes == (include,)


def test_includes_accumulate_and_deduplicate():
    query = parse_search(
        "Observation",
        [
            ("_include", "Observation:patient"),
            ("_include", "Observation:based-on"),
            ("_include", "Observation:patient"),
        ],
    )
    assert [i.param for i in query.includes] == ["patient", "based-on"]


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        ("Patient:general-practitioner", "invalid", "searched type"),
        ("Observation:code", "invalid", "not a reference"),
        ("Observation:nope", "invalid", "not a reference"),
        ("Observation", "invalid", "Type:parameter"),
        ("Observation:patient:Patient:x", "invalid", "Type:parameter"),
        ("observation:patient", "invalid", "Type:parameter"),
        ("Observation:patient:Group", "invalid", "cannot refer to Group"),
        ("*", "not-supported", "Wildcard"),
    ],
)
def test_bad_include(value, code, fragment):
    issue = _error("Observation", "_include", value)
    assert (issue.code, issue.expression) == (code, ("_include",))
    assert fragment in issue.diagnostics


def test_include_iterate_is_not_supported():
    issue = _error("Observation", "_include:iterate", "Observation:patient")
    assert issue.code == "not-supported"
    assert "iterate" in issue.diagnostics


@pytest.mark.parametrize(
    ("resource_type", "value", "include"),
    [
        ("Patient", "Observation:patient", Include("Observation", "patient", None)),
        ("Patient", "Observation:subject:Patient", Include("Observation", "subject", "Patient")),
        ("ServiceRequest", "Task:focus", Include("Task", "focus", None)),
        ("ServiceRequest", "Procedure:based-on", Include("Procedure", "based-on", None)),
        ("Organization", "Coverage:payor", Include("Coverage", "payor", None)),
        (
            "Practitioner",
            "PractitionerRole:practitioner",
            Include("PractitionerRole", "practitioner", None),
        ),
    ],
)
def test_revinclude(resource_type, value, include):
    assert parse_search(resource_type, [("_revinclude", value)]).revincludes == (include,)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("Encounter:patient", "not-supported"),
        ("Observation:based-on", "invalid"),  # cannot point at a Patient
        ("Observation:code", "invalid"),
        ("Observation:subject:Group", "invalid"),
        ("*", "not-supported"),
    ],
)
def test_bad_revinclude(value, code):
    assert _error("Patient", "_revinclude", value).code == code


def test_revinclude_iterate_is_not_supported():
    assert _error("Patient", "_revinclude:iterate", "Observation:patient").code == "not-supported"


# --- unknown, chained, every problem at once, lenient --------------------------------------------


def test_unknown_parameter_names_it_and_lists_the_supported_ones():
    issue = _error("Observation", "codee", "x")
    assert issue.code == "not-supported"
    assert issue.expression == ("codee",)
    assert "codee" in issue.diagnostics
    for name in ("_id", "_lastUpdated", "code", "patient", "date", "part-of"):
        assert name in issue.diagnostics


@pytest.mark.parametrize("key", ["subject.name", "patient.identifier", "subject:Patient.name"])
def test_chained_parameters_are_not_supported(key):
    issue = _error("Observation", key, "x")
    assert issue.code == "not-supported"
    assert "Chained" in issue.diagnostics


@pytest.mark.parametrize("key", ["_has:Observation:patient:code", "_tag", "_text", "_filter"])
def test_other_special_parameters_are_unknown(key):
    assert _error("Patient", key, "x").code == "not-supported"


def test_unknown_token_modifiers():
    for key in ("code:of-type", "code:below", "code:in", "code:exact"):
        assert _error("Observation", key, "x").code == "not-supported"


def test_unknown_modifier_on_a_result_parameter():
    assert _error("Patient", "_count:exact", "5").code == "not-supported"


def test_every_problem_is_reported_at_once():
    issues = _errors(
        "Observation",
        [
            ("codee", "1"),
            ("code:below", "x"),
            ("date", "xx2026"),
            ("date", "zz2026"),
            ("_count", "abc"),
            ("_sort", "foo"),
            ("subject.name", "Rivera"),
            ("_include", "Patient:x"),
            ("_summary", "text"),
            ("patient", "Group/1"),
            ("status", "final"),  # fine: no issue
        ],
    )
    assert [i.expression[0] for i in issues] == [
        "codee",
        "code:below",
        "date",
        "date",
        "_count",
        "_sort",
        "subject.name",
        "_include",
        "_summary",
        "patient",
    ]
    assert all(i.severity == "error" for i in issues)


def test_lenient_drops_unknown_parameters_and_modifiers_with_warnings():
    query = parse_search(
        "Observation",
        [("codee", "1"), ("code:below", "x"), ("subject.name", "Rivera"), ("status", "final")],
        lenient=True,
    )
    assert [c.name for c in query.criteria] == ["status"]
    assert [(i.severity, i.code, i.expression) for i in query.issues] == [
        ("warning", "not-supported", ("codee",)),
        ("warning", "not-supported", ("code:below",)),
        ("warning", "not-supported", ("subject.name",)),
    ]
    assert all("ignored" in i.diagnostics for i in query.issues)


def test_lenient_still_refuses_malformed_values_of_known_parameters():
    issues = _errors(
        "Observation", [("codee", "1"), ("date", "bad"), ("_count", "-5")], lenient=True
    )
    assert [(i.severity, i.expression) for i in issues] == [
        ("error", ("date",)),
        ("error", ("_count",)),
    ]


def test_unknown_resource_type_is_not_found():
    with pytest.raises(FhirError) as info:
        parse_search("Encounter", [])
    assert info.value.status == 404


@pytest.mark.parametrize(("key", "value"), [("family", r"a\b"), ("code", "x\\"), ("_id", r"p\1")])
def test_a_backslash_escaping_nothing_is_invalid(key, value):
    resource_type = "Observation" if key == "code" else "Patient"
    issue = _error(resource_type, key, value)
    assert issue.code == "invalid"
    assert "backslash" in issue.diagnostics


def test_escaped_backslash_and_dollar_are_literal():
    crit = _one("Patient", "family", r"a\\b\$")
    assert crit.values == (StringValue(r"a\b$"),)
