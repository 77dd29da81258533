"""SMART system scopes, v1 and v2 syntax: what parses, what grants what, what a client may get."""

from __future__ import annotations

import pytest

from fhir_bridge.security.scopes import allowed, grant, parse_scope, parse_scopes


@pytest.mark.parametrize(
    ("text", "resource_type", "letters"),
    [
        ("system/Observation.read", "Observation", "rs"),
        ("system/Observation.write", "Observation", "cud"),
        ("system/Observation.*", "Observation", "cruds"),
        ("system/Observation.rs", "Observation", "rs"),
        ("system/*.cruds", "*", "cruds"),
        ("system/Task.cu", "Task", "cu"),
    ],
)
def test_v1_and_v2_scopes_parse_to_permission_letters(text, resource_type, letters):
    scope = parse_scope(text)
    assert scope is not None
    assert scope.resource_type == resource_type
    assert scope.permissions == frozenset(letters)


@pytest.mark.parametrize(
    "text",
    [
        "system/Observation.sr",  # out of order
        "system/Observation.rr",  # repeated
        "system/Observation.rs?category=vital-signs",  # granular: not supported, grants nothing
        "patient/Observation.rs",  # not a system scope
        "user/*.read",
        "system/observation.rs",  # not a resource type
        "openid",
        "",
    ],
)
def test_other_scopes_grant_nothing(text):
    assert parse_scope(text) is None


def test_allowed_checks_type_and_interaction():
    scopes = parse_scopes("system/Observation.rs system/Task.c")
    assert allowed(scopes, "Observation", "read")
    assert allowed(scopes, "Observation", "search")
    assert not allowed(scopes, "Observation", "create")
    assert allowed(scopes, "Task", "create")
    assert not allowed(scopes, "Task", "read")
    assert not allowed(scopes, "Patient", "read")
    assert allowed(parse_scopes("system/*.read"), "Patient", "history")


def test_a_client_gets_only_what_its_registration_covers():
    registered = "system/*.rs system/Task.cu"
    granted = grant(
        "system/Observation.read system/Task.cud system/*.rs system/Patient.c", registered
    )
    assert [s.text for s in granted] == ["system/Observation.read", "system/*.rs"]
    assert grant("system/*.cruds", "system/*.cruds")[0].text == "system/*.cruds"
    assert grant("system/*.rs", "system/Observation.rs") == []
