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


# --------------------------------------------------------------- small hand-built bundles
# Each row states exactly what a partner receives: the parts in order, the entries of each
# part (by name), and the references of the entries whose rewriting matters.

SYSTEM = "http://example.org/id"


def _url(name: str) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-{name.encode().hex():0>12}"


def _entry(name: str, kind: str, **resource: Any) -> dict[str, Any]:
    return {
        "fullUrl": _url(name),
        "resource": {"resourceType": kind, **resource},
        "request": {"method": "POST", "url": kind, "ifNoneExist": f"identifier={SYSTEM}|{name}"},
    }


def _ref(name: str) -> dict[str, str]:
    return {"reference": _url(name)}


def _cond(kind: str, name: str) -> dict[str, str]:
    return {"reference": f"{kind}?identifier={SYSTEM}|{name}"}


def _bundle(*entries: dict[str, Any], **extra: Any) -> Bundle:
    return {"resourceType": "Bundle", "type": "transaction", **extra, "entry": list(entries)}


PAT = _entry("pat", "Patient")
# a contained resource (listed first) refers to DEV: neither an ordering constraint nor rewritten
OBS = _entry(
    "obs",
    "Observation",
    contained=[{"resourceType": "Device", "id": "d", "owner": _ref("dev")}],
    subject=_ref("pat"),
)
DEV = _entry("dev", "Device")
# an identifier whose value is another entry's fullUrl is not a reference
DOC = _entry(
    "doc", "DocumentReference", identifier=[{"system": "urn:ietf:rfc:3986", "value": _url("pat")}]
)
# a cycle (which no conditional reference resolves): the builder's order is kept
CYC_A = _entry("a", "Goal", addresses=[_ref("b")])
CYC_B = _entry("b", "Goal", addresses=[_ref("a")])
# a reference to itself (Patient.link.other)
SELF = {**PAT, "resource": {"resourceType": "Patient", "link": [{"other": _ref("pat")}]}}
# an entry-level extension is not part of the resource: sent as built
EXT = {**DOC, "extension": [{"url": "http://example.org/x", "valueReference": _ref("pat")}]}


def _names(parts: list[Bundle]) -> list[list[str]]:
    by_url = {_url(n): n for n in ("pat", "obs", "dev", "doc", "a", "b")}
    return [[by_url[e["fullUrl"]] for e in p["entry"]] for p in parts]


def _sent(parts: list[Bundle], name: str) -> dict[str, Any]:
    return next(e for p in parts for e in p["entry"] if e["fullUrl"] == _url(name))


@pytest.mark.parametrize(
    ("entries", "max_entries", "kind", "names", "expect"),
    [
        (
            [OBS, PAT, DEV],
            1,
            "transaction",
            [["pat"], ["obs"], ["dev"]],
            {
                "obs": {
                    **OBS["resource"],
                    "subject": _cond("Patient", "pat"),  # PAT is in an earlier part
                }
            },
        ),
        (
            [OBS, PAT, DEV],
            2,
            "transaction",
            [["pat", "obs"], ["dev"]],
            {"obs": OBS["resource"]},  # same part: resolved within the transaction
        ),
        (
            [OBS, PAT, DEV],
            None,
            "batch",
            [["pat", "dev"], ["obs"]],
            {"obs": {**OBS["resource"], "subject": _cond("Patient", "pat")}},
        ),
        ([DOC, PAT], 1, "transaction", [["doc"], ["pat"]], {"doc": DOC["resource"]}),
        ([DOC, PAT], None, "batch", [["doc", "pat"]], {"doc": DOC["resource"]}),
        (
            [CYC_A, CYC_B],
            1,
            "transaction",
            [["a"], ["b"]],
            {
                "a": {**CYC_A["resource"], "addresses": [_cond("Goal", "b")]},
                "b": {**CYC_B["resource"], "addresses": [_cond("Goal", "a")]},
            },
        ),
        ([CYC_B, CYC_A], None, "batch", [["b"], ["a"]], {}),
        (
            [SELF, DOC],
            None,
            "batch",  # in a batch an entry does not even resolve its own fullUrl
            [["pat", "doc"]],
            {"pat": {"resourceType": "Patient", "link": [{"other": _cond("Patient", "pat")}]}},
        ),
        ([SELF, DOC], 1, "transaction", [["pat"], ["doc"]], {"pat": SELF["resource"]}),
    ],
)
def test_small_bundles_are_shaped_exactly(entries, max_entries, kind, names, expect):
    parts = shape_bundle(_bundle(*entries), max_entries=max_entries, bundle_type=kind)
    assert _names(parts) == names
    assert [(p["resourceType"], p["type"]) for p in parts] == [("Bundle", kind)] * len(parts)
    for name, resource in expect.items():
        assert _sent(parts, name)["resource"] == resource
    # every entry once, its request (the idempotency key) unchanged
    sent = {e["fullUrl"]: e["request"] for p in parts for e in p["entry"]}
    assert sent == {e["fullUrl"]: e["request"] for e in entries}


def test_an_entry_level_extension_is_sent_as_built():
    parts = shape_bundle(_bundle(PAT, EXT), max_entries=1, bundle_type="transaction")
    assert _sent(parts, "doc") == EXT


def test_a_transaction_exactly_at_the_limit_is_sent_as_built():
    bundle = _bundle(OBS, PAT, DEV, id="b1", timestamp="2026-01-02T03:04:05Z")
    assert shape_bundle(bundle, max_entries=3, bundle_type="transaction") == [bundle]
    split = shape_bundle(bundle, max_entries=2, bundle_type="transaction")
    assert _names(split) == [["pat", "obs"], ["dev"]]
    assert all("id" not in p for p in split)


def test_payload_passthrough_and_reserialization():
    # an unsplit transaction is not even parsed
    assert shape_payload(b"not json", max_entries=None, bundle_type="transaction") == [b"not json"]
    # within the limit: the stored bytes, whatever their layout
    pretty = jsonio.dumps(_bundle(OBS, PAT), pretty=True)
    assert shape_payload(pretty, max_entries=2, bundle_type="transaction") == [pretty]
    # a batch of one part is a new Bundle of type batch, not the stored transaction
    (batch,) = shape_payload(jsonio.dumps(_bundle(PAT)), max_entries=None, bundle_type="batch")
    assert jsonio.loads(batch) == {"resourceType": "Bundle", "type": "batch", "entry": [PAT]}


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"method": "PUT", "url": "Patient?identifier=s|1"}, "Patient?identifier=s|1"),
        (
            {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=s|1"},
            "Patient?identifier=s|1",
        ),
        # the search is what the request holds, even without a type
        ({"method": "POST", "ifNoneExist": "identifier=s|1"}, "?identifier=s|1"),
    ],
)
def test_conditional_reference_of_a_conditional_request(request_, expected):
    assert conditional_reference({"fullUrl": _url("pat"), "request": request_}) == expected


@pytest.mark.parametrize(
    "request_",
    [
        {"method": "POST", "url": "Patient?identifier=s|1"},  # no ifNoneExist: not conditional
        {"method": "DELETE", "url": "Patient?identifier=s|1"},
        {"method": "PUT", "url": "Patient/1"},
        {"method": "PUT"},
        None,
    ],
)
def test_a_request_that_is_not_conditional_is_refused_naming_the_entry(request_):
    with pytest.raises(SplitError) as raised:
        conditional_reference({"fullUrl": _url("pat"), "request": request_})
    assert str(raised.value) == f"entry {_url('pat')!r} is not a conditional create or update"


@pytest.mark.parametrize(
    ("max_entries", "kind", "message"),
    [
        (0, "transaction", "max_entries must be at least 1"),
        (8, "collection", "bundle_type must be one of transaction, batch"),
        (None, "collection", "bundle_type must be one of transaction, batch"),
    ],
)
def test_bad_shapes_are_refused_with_their_exact_reason(max_entries, kind, message):
    with pytest.raises(SplitError) as raised:
        shape_bundle(_bundle(PAT), max_entries=max_entries, bundle_type=kind)
    assert str(raised.value) == message
    if kind != "transaction":  # refused before the payload is read
        with pytest.raises(SplitError) as raised:
            shape_payload(b"not json", max_entries=max_entries, bundle_type=kind)
        assert str(raised.value) == message
