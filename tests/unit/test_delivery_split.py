"""A delivery Bundle in a partner's shape (pure): ordered parts, conditional cross-references."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_bridge.fhir import jsonio
from fhir_bridge.mapping.delivery_split import (
    SplitError,
    conditional_reference,
    shape_bundle,
    shape_payload,
)
from tests.unit.test_delivery_bundle import _build, _errors

Bundle = dict[str, Any]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out.append(value)
            elif key != "contained":
                out += _refs(value)
        return out
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def _key(entry: dict[str, Any]) -> str:
    return conditional_reference(entry)


def _check_invariants(original: Bundle, parts: list[Bundle], max_entries: int | None, kind: str):
    """What every shape must hold, whatever the table row."""
    by_url = {e["fullUrl"]: e for e in original["entry"]}
    sent = [e for p in parts for e in p["entry"]]
    # every entry exactly once, its request (the idempotency key) unchanged
    assert sorted(_key(e) for e in sent) == sorted(_key(e) for e in original["entry"])
    assert {e["fullUrl"]: e["request"] for e in sent} == {
        u: e["request"] for u, e in by_url.items()
    }
    position = {e["fullUrl"]: (n, i) for n, p in enumerate(parts) for i, e in enumerate(p["entry"])}
    for n, part in enumerate(parts):
        assert part["resourceType"] == "Bundle"
        assert part["type"] == kind
        assert max_entries is None or len(part["entry"]) <= max_entries
        assert _errors(part) == []
        local = {e["fullUrl"] for e in part["entry"]}
        for entry in part["entry"]:
            original_refs = _refs(by_url[entry["fullUrl"]]["resource"])
            for before, after in zip(original_refs, _refs(entry["resource"]), strict=True):
                if before not in by_url:  # logical or outside references: untouched
                    assert after == before
                    continue
                target = position[before]
                if len(parts) > 1:  # one transaction is as built: its order is the server's
                    assert target < position[entry["fullUrl"]], "a target is placed first"
                if kind == "transaction" and before in local:
                    assert after == before  # resolved within the transaction
                else:
                    assert after == _key(by_url[before])  # conditional, across Bundles
                    assert target[0] < n


@pytest.mark.parametrize(
    ("max_entries", "kind", "sizes"),
    [
        # the golden visit: Patient, Goal, Procedure, 9 Observations, Task (13 entries)
        (None, "transaction", [13]),
        (13, "transaction", [13]),
        (8, "transaction", [8, 5]),
        (5, "transaction", [5, 5, 3]),
        (1, "transaction", [1] * 13),
        # batch: dependency levels (Patient; Goal; Procedure; what references it; the
        # Observations derived from those), each cut at max_entries
        (None, "batch", [1, 1, 1, 6, 4]),
        (4, "batch", [1, 1, 1, 4, 2, 4]),
    ],
)
def test_shapes_keep_every_entry_once_in_dependency_order(max_entries, kind, sizes):
    bundle = _build()
    before = copy.deepcopy(bundle)
    parts = shape_bundle(bundle, max_entries=max_entries, bundle_type=kind)
    assert [len(p["entry"]) for p in parts] == sizes
    _check_invariants(bundle, parts, max_entries, kind)
    assert bundle == before  # the input is not changed
    assert parts == shape_bundle(bundle, max_entries=max_entries, bundle_type=kind)


def test_the_first_part_holds_the_referenced_resources_before_their_referrers():
    parts = shape_bundle(_build(), max_entries=8, bundle_type="transaction")
    kinds = [[e["resource"]["resourceType"] for e in p["entry"]] for p in parts]
    assert kinds[0][:3] == ["Patient", "Goal", "Procedure"]
    observation = parts[1]["entry"][0]["resource"]
    assert observation["subject"]["reference"].startswith("Patient?identifier=")
    assert observation["partOf"][0]["reference"].startswith("Procedure?identifier=")


def test_an_entry_is_placed_after_its_target_even_when_built_before_it():
    bundle = _build()
    entries = bundle["entry"]
    reordered = {**bundle, "entry": [*entries[2:], *entries[:2]]}  # Patient and Goal last
    parts = shape_bundle(reordered, max_entries=3, bundle_type="transaction")
    assert parts[0]["entry"][0]["resource"]["resourceType"] == "Patient"
    _check_invariants(reordered, parts, 3, "transaction")


def test_an_unsplit_transaction_is_sent_byte_for_byte():
    payload = jsonio.dumps(_build())
    assert shape_payload(payload, max_entries=None, bundle_type="transaction") == [payload]
    assert shape_payload(payload, max_entries=50, bundle_type="transaction") == [payload]
    split = shape_payload(payload, max_entries=8, bundle_type="transaction")
    assert [len(jsonio.loads(p)["entry"]) for p in split] == [8, 5]
    batch = shape_payload(payload, max_entries=None, bundle_type="batch")
    assert {jsonio.loads(p)["type"] for p in batch} == {"batch"}


@pytest.mark.parametrize(
    ("max_entries", "kind", "message"),
    [
        (0, "transaction", "at least 1"),
        (8, "collection", "bundle_type"),
    ],
)
def test_bad_shapes_are_refused(max_entries, kind, message):
    with pytest.raises(SplitError, match=message):
        shape_bundle(_build(), max_entries=max_entries, bundle_type=kind)


def test_an_entry_without_a_conditional_request_cannot_cross_bundles():
    bundle = _build()
    bundle["entry"][0]["request"] = {"method": "POST", "url": "Patient"}
    with pytest.raises(SplitError, match="not a conditional"):
        shape_bundle(bundle, max_entries=8, bundle_type="transaction")
