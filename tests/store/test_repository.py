"""The versioned store: versions, meta, history, optimistic locking, exact JSON, atomicity."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fhir_bridge.fhir import jsonio
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.errors import ResourceGone, ResourceNotFound, VersionConflict
from fhir_bridge.store.repository import ResourceStore
from tests.factories import observation, patient


def test_create_sets_version_one_and_last_updated(runtime):
    fixed = datetime(2026, 11, 28, 12, 0, 0, 123000)
    with write_session(runtime.sessions) as session:
        stored = ResourceStore(session, now=lambda: fixed).create(
            patient("p1", "P-1", "Rivera", "Ana"), resource_id="p1"
        )
    body = stored.resource
    assert body["id"] == "p1"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] == "2026-11-28T12:00:00.123000Z"
    assert stored.etag == 'W/"1"'
    assert list(body)[:3] == ["resourceType", "id", "meta"]


def test_every_update_bumps_version_and_keeps_history(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        store.update(patient("p1", "P-1", "Rivera", "Ana"))
        changed = patient("p1", "P-1", "Rivera", "Ana")
        changed["birthDate"] = "1979-03-15"
        stored, created = store.update(changed)
    assert not created
    assert stored.version_id == 2
    with read_session(runtime.sessions) as session:
        store = ResourceStore(session)
        history = store.history("Patient", "p1")
        assert [v.version_id for v in history] == [2, 1]
        assert store.vread("Patient", "p1", 1).resource["birthDate"] == "1979-03-14"
        assert store.read("Patient", "p1").resource["birthDate"] == "1979-03-15"
        assert history[0].last_updated > history[1].last_updated


def test_identical_update_writes_no_new_version(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        first, _ = store.update(patient("p1", "P-1", "Rivera", "Ana"))
        again, created = store.update(patient("p1", "P-1", "Rivera", "Ana"))
    assert not created
    assert again.version_id == first.version_id == 1


def test_stale_version_is_refused(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        store.update(patient("p1", "P-1", "Rivera", "Ana"))
        store.update(patient("p1", "P-1", "Rivera", "Lucia"))
    with pytest.raises(VersionConflict) as exc, write_session(runtime.sessions) as session:
        ResourceStore(session).update(patient("p1", "P-1", "Rivera", "Maria"), expected_version=1)
    assert exc.value.status == 412
    assert exc.value.current_version == 2


def test_decimals_and_unknown_elements_survive_exactly(runtime):
    raw = jsonio.loads(
        b'{"resourceType":"Observation","id":"o1","status":"final",'
        b'"code":{"text":"x"},"valueQuantity":{"value":1.50},'
        b'"_status":{"extension":[{"url":"http://example.org/x","valueString":"y"}]}}'
    )
    with write_session(runtime.sessions) as session:
        ResourceStore(session).update(raw)
    with read_session(runtime.sessions) as session:
        content = ResourceStore(session).read("Observation", "o1").content
    assert b'"value":1.50' in content
    assert b'"_status":{"extension":[{"url":"http://example.org/x","valueString":"y"}]}' in content


def test_unknown_and_deleted_resources(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        store.update(patient("p1", "P-1", "Rivera", "Ana"))
        tombstone = store.delete("Patient", "p1")
    assert tombstone is not None
    assert tombstone.version_id == 2
    with read_session(runtime.sessions) as session:
        store = ResourceStore(session)
        with pytest.raises(ResourceGone):
            store.read("Patient", "p1")
        with pytest.raises(ResourceNotFound):
            store.read("Patient", "nope")
        with pytest.raises(ResourceNotFound):
            store.vread("Patient", "p1", 9)
        assert store.vread("Patient", "p1", 1).resource["name"][0]["family"] == "Rivera"


def test_failed_transaction_leaves_nothing_behind(runtime):
    def crash_after_two_writes() -> None:
        with write_session(runtime.sessions) as session:
            store = ResourceStore(session)
            store.update(patient("p1", "P-1", "Rivera", "Ana"))
            store.update(observation("o1", "p1"))
            raise RuntimeError("crash after two writes")

    with pytest.raises(RuntimeError):
        crash_after_two_writes()
    with read_session(runtime.sessions) as session:
        store = ResourceStore(session)
        assert store.get("Patient", "p1") is None
        assert store.get("Observation", "o1") is None


def test_last_updated_never_goes_backwards(runtime):
    late = datetime(2026, 11, 28, 12, 0, 0)
    with write_session(runtime.sessions) as session:
        ResourceStore(session, now=lambda: late).update(patient("p1", "P-1", "Rivera", "Ana"))
    with write_session(runtime.sessions) as session:
        # a clock that stepped back must not make version 2 older than version 1
        stored, _ = ResourceStore(session, now=lambda: late - timedelta(hours=1)).update(
            patient("p1", "P-1", "Rivera", "Lucia")
        )
    assert stored.last_updated > late


def test_inbound_payload_is_kept_byte_for_byte(runtime):
    body = b'{ "resourceType" : "Patient",\n  "value": 1.500 }'
    with write_session(runtime.sessions) as session:
        pk = ResourceStore(session).keep_inbound(
            body=body,
            channel="fhir",
            method="POST",
            path="/fhir/Patient",
            content_type="application/fhir+json",
            request_id="r1",
            sha256="0" * 64,
        )
    from fhir_bridge.store.models import InboundPayload

    with read_session(runtime.sessions) as session:
        assert session.get(InboundPayload, pk).body == body


def test_search_by_identifier_finds_live_resources_with_or_without_system(runtime):
    from tests.factories import MRN

    store_all_ = [patient("p1", "P-1", "Rivera", "Ana"), patient("p2", "P-2", "Okafor", "Chidi")]
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        for r in store_all_:
            store.update(r)
        store.delete("Patient", "p2")
    with read_session(runtime.sessions) as session:
        store = ResourceStore(session)
        assert [s.resource_id for s in store.search_by_identifier("Patient", MRN, "P-1")] == ["p1"]
        assert [s.resource_id for s in store.search_by_identifier("Patient", None, "P-1")] == ["p1"]
        assert store.search_by_identifier("Patient", "https://other.example.org", "P-1") == []
        assert store.search_by_identifier("Patient", MRN, "P-2") == []


def test_bulk_create_indexes_every_resource(runtime):
    with write_session(runtime.sessions) as session:
        count = ResourceStore(session).bulk_create(
            [observation(f"o{n}", "p1", value=n) for n in range(50)]
            + [patient("p1", "P-1", "Rivera", "Ana")]
        )
    assert count == 51
    with read_session(runtime.sessions) as session:
        store = ResourceStore(session)
        assert store.read("Observation", "o7").resource["valueQuantity"]["value"] == 7
        assert [s.resource_id for s in store.search_by_identifier("Patient", None, "P-1")] == ["p1"]


def test_get_many_answers_exactly_the_pairs_asked_for_that_are_live(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        store.update(patient("a", "GM-A", "Rivera", "Ana"))
        store.update(patient("b", "GM-B", "Okafor", "Chidi"))
        store.update(patient("gone", "GM-G", "Nguyen", "Bao"))
        store.update(observation("a", "Patient/a"))  # same id as Patient/a, another type
        store.delete("Patient", "gone")
    with read_session(runtime.sessions) as session:
        found = ResourceStore(session).get_many(
            [("Patient", "a"), ("Observation", "b"), ("Patient", "gone"), ("Patient", "a")]
        )
        assert set(found) == {("Patient", "a")}  # not Observation/a nor Patient/b
        assert found[("Patient", "a")].resource["identifier"][0]["value"] == "GM-A"
        assert ResourceStore(session).get_many([]) == {}
