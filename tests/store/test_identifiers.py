"""Business identity: the database, not a read-then-write race, refuses a second owner."""

from __future__ import annotations

import threading

import pytest

from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.errors import DuplicateIdentifier
from fhir_bridge.store.repository import ResourceStore
from tests.factories import MRN, patient


def test_second_create_with_claimed_identifier_is_refused(runtime):
    with write_session(runtime.sessions) as session:
        first = ResourceStore(session).create(
            patient("x", "P-1", "Rivera", "Ana"), claim_identifiers=[(MRN, "P-1")]
        )
    with pytest.raises(DuplicateIdentifier) as exc, write_session(runtime.sessions) as session:
        ResourceStore(session).create(
            patient("x", "P-1", "Rivera", "Ana"), claim_identifiers=[(MRN, "P-1")]
        )
    assert exc.value.status == 409
    assert exc.value.existing.resource_id == first.resource_id


def test_claims_are_per_resource_type(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        store.create(patient("x", "P-1", "Rivera", "Ana"), claim_identifiers=[(MRN, "P-1")])
        other = {"resourceType": "Practitioner", "identifier": [{"system": MRN, "value": "P-1"}]}
        store.create(other, claim_identifiers=[(MRN, "P-1")])
    with read_session(runtime.sessions) as session:
        assert ResourceStore(session).find_by_identifier("Practitioner", MRN, "P-1") is not None


def test_duplicate_inside_a_transaction_keeps_the_transaction_usable(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        store.create(patient("x", "P-1", "Rivera", "Ana"), claim_identifiers=[(MRN, "P-1")])
        with pytest.raises(DuplicateIdentifier):
            store.create(patient("y", "P-1", "Rivera", "Ana"), claim_identifiers=[(MRN, "P-1")])
        store.create(patient("z", "P-2", "Okafor", "Chidi"), claim_identifiers=[(MRN, "P-2")])
    with read_session(runtime.sessions) as session:
        store = ResourceStore(session)
        assert store.find_by_identifier("Patient", MRN, "P-2") is not None


def test_eight_concurrent_creates_of_one_identity_store_exactly_one(runtime):
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        barrier.wait()
        try:
            with write_session(runtime.sessions) as session:
                stored = ResourceStore(session).create(
                    patient(f"c{n}", "P-RACE", "Rivera", "Ana"), claim_identifiers=[(MRN, "P-RACE")]
                )
            result = f"created:{stored.resource_id}"
        except DuplicateIdentifier as exc:
            result = f"existing:{exc.existing.resource_id}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    created = [o for o in outcomes if o.startswith("created:")]
    assert len(outcomes) == 8
    assert len(created) == 1
    winner = created[0].split(":")[1]
    assert all(o.split(":")[1] == winner for o in outcomes)
    with read_session(runtime.sessions) as session:
        from sqlalchemy import func, select

        from fhir_bridge.store.models import Resource

        count = session.execute(
            select(func.count()).select_from(Resource).where(Resource.resource_type == "Patient")
        ).scalar()
    assert count == 1
