"""Thousands of generated and mutated records: never a 5xx, never a half-written session."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_bridge.records.openapi import EXAMPLE_RECORD
from tests.api.test_sessions_api import counts


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    # a named function: Hypothesis reads a lambda's source to check it recurses, which can fail
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=10), children, max_size=4
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.integers(2**63, 10**40)  # beyond 64 bits: the JSON writer cannot write them as ints
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "pain \udfff"]),  # unpaired surrogates, sent as escapes
    _containers,
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def mutated_records(draw: st.DrawFn) -> Any:
    body = copy.deepcopy(EXAMPLE_RECORD)
    body["session_id"] = draw(st.sampled_from(["MMC-1", "MMC-2", "MMC-3"]))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "replace", "retract"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "retract":
            body["status"] = "entered-in-error"
        else:
            parent[path[-1]] = draw(JSON)
    return body


@settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.one_of(mutated_records(), JSON))
def test_every_answer_is_2xx_or_4xx_with_paths_and_all_or_nothing(client, runtime, payload):
    before = counts(runtime)
    resp = client.post(
        "/api/v1/sessions", data=json.dumps(payload), content_type="application/json"
    )
    assert resp.status_code < 500, resp.get_data(as_text=True)
    body = resp.get_json()
    if resp.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome"
        assert all(issue.get("expression") for issue in body["issue"])
        assert counts(runtime) == before, "a refused record left something behind"
        return
    for ref in body["resources"]:
        assert client.get(f"/fhir/{ref['resourceType']}/{ref['id']}").status_code == 200
    assert client.get(f"/api/v1/sessions/{body['session_id']}").status_code == 200
