"""Routing outbox events to partners, and the Bundles they receive (both databases).

The flow: a referral from Dr. Natarajan (NPI 1407071236) is posted and accepted, then a visit
based on it is documented (patient P-1001, payer ACME-HEALTH). Partners are registered
directly in the store.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from fhir_bridge.fhir.transaction import iter_references
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.outbox.payload import (
    PayloadSourceGone,
    build_payload,
    build_payloads,
)
from fhir_bridge.outbox.routing import (
    GAP_GRACE,
    RoutingFacts,
    _settled,
    recipients,
    route_pending,
)
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.deliveries import DeliveryRow, DeliveryStore
from fhir_bridge.store.models import OutboxCursor, OutboxEvent
from fhir_bridge.store.outbox import EVENT_TYPES, Event, OutboxWriter
from fhir_bridge.store.partners import PartnerRow, PartnerStore
from fhir_bridge.store.repository import ResourceStore, StoredResource
from tests.api.test_referrals import act, on_file, post, post_session, referral, session

__all__ = ["on_file"]  # a fixture, used by name

NPI = "http://hl7.org/fhir/sid/us-npi"
REQUESTER = "1407071236"
T0 = datetime(2026, 12, 1, 9, 0, 0)
BASE = "https://clinic.example.org/fhir"


def _partner(
    runtime: Runtime,
    key: str,
    *,
    kind: str = "physician",
    identifiers: list[dict[str, str]],
    events: tuple[str, ...] = EVENT_TYPES,
    enabled: bool = True,
) -> int:
    with write_session(runtime.sessions) as s:
        store = PartnerStore(s)
        row = store.add(
            key=key,
            name=key,
            kind=kind,
            base_url=f"https://{key}.example.org/fhir",
            events=list(events),
            identifiers=identifiers,
            auth_kind="none",
            auth={},
            now=T0,
        )
        if not enabled:
            store.set_enabled(key, False, now=T0)
        return row.pk


def _deliveries(runtime: Runtime, partner_pk: int | None = None) -> list[DeliveryRow]:
    with read_session(runtime.sessions) as s:
        return DeliveryStore(s).list(partner_pk=partner_pk, limit=1000)


def _payload(runtime: Runtime, row: DeliveryRow) -> dict[str, Any]:
    with read_session(runtime.sessions) as s:
        return build_payload(s, row, clinic_system_base=runtime.settings.clinic_system_base)


def _errors(resource: dict[str, Any]) -> list[Any]:
    return [i for i in validate_resource(resource) if i.severity in ("error", "fatal")]


@pytest.fixture
def flow(client, runtime, on_file) -> dict[str, str]:
    """Referral posted and accepted, one visit documented on it."""
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    assert act(client, sr_id, "accept").status_code == 200
    visit = post_session(client, session("V-1"))
    assert visit.status_code == 201, visit.get_json()
    [procedure] = [
        r["id"] for r in visit.get_json()["resources"] if r["resourceType"] == "Procedure"
    ]
    return {"service_request": sr_id, "procedure": procedure}


@pytest.fixture
def partners(runtime) -> dict[str, int]:
    """The referring physician, the payer, and partners that must get nothing."""
    payer_id = {"system": runtime.settings.payer_id_system, "value": "ACME-HEALTH"}
    requester = {"system": NPI, "value": REQUESTER}
    return {
        "ehr": _partner(runtime, "ehr", identifiers=[requester]),
        "payer": _partner(
            runtime,
            "payer",
            kind="payer",
            identifiers=[payer_id],
            events=("session.documented", "referral.received"),
        ),
        "other-ehr": _partner(
            runtime, "other-ehr", identifiers=[{"system": NPI, "value": "1234567893"}]
        ),
        "unsubscribed": _partner(
            runtime, "unsubscribed", identifiers=[requester], events=("referral.completed",)
        ),
        "disabled": _partner(runtime, "disabled", identifiers=[requester, payer_id], enabled=False),
    }


def test_events_reach_the_referring_physician_and_the_payer_once(runtime, flow, partners):
    created = route_pending(runtime)
    ehr = [d.event_type for d in _deliveries(runtime, partners["ehr"])]
    payer = [d.event_type for d in _deliveries(runtime, partners["payer"])]
    assert ehr == [
        "referral.received",
        "referral.accepted",
        "session.documented",
        "referral.visit-documented",
    ]
    assert payer == ["session.documented"]  # subscribed to referral.received, but not its payer
    for nobody in ("other-ehr", "unsubscribed", "disabled"):
        assert _deliveries(runtime, partners[nobody]) == []
    assert created == 5
    rows = _deliveries(runtime)
    assert {(d.status, d.attempts) for d in rows} == {("pending", 0)}
    with read_session(runtime.sessions) as s:
        assert {DeliveryStore(s).payload(d.pk) for d in rows} == {None}
    assert all(d.patient_id == "pat-rivera" for d in rows)
    # routing again finds nothing new; a later event is routed alone
    assert route_pending(runtime) == 0
    assert len(_deliveries(runtime)) == 5


def test_later_events_are_routed_and_the_cursor_skips_what_was_read(
    client, runtime, flow, partners
):
    assert route_pending(runtime) == 5
    assert act(client, flow["service_request"], "complete").status_code == 200
    # a partner registered now does not receive events from before the cursor
    late = _partner(runtime, "late", identifiers=[{"system": NPI, "value": REQUESTER}])
    # completing files the discharge summary: ehr and late get both events, unsubscribed the
    # one it takes
    assert route_pending(runtime) == 5
    completed = ["referral.completed", "report.generated"]
    assert [d.event_type for d in _deliveries(runtime, late)] == completed
    assert [d.event_type for d in _deliveries(runtime, partners["ehr"])][-2:] == completed
    assert [d.event_type for d in _deliveries(runtime, partners["unsubscribed"])] == [
        "referral.completed"
    ]


def test_no_recipient_still_moves_the_cursor(client, runtime, flow):
    assert route_pending(runtime) == 0
    _partner(runtime, "ehr", identifiers=[{"system": NPI, "value": REQUESTER}])
    assert route_pending(runtime) == 0
    assert _deliveries(runtime) == []


def test_route_pending_respects_the_limit(runtime, flow, partners):
    # the limit counts events: received + accepted, then the visit's two events (three rows)
    assert [route_pending(runtime, limit=2) for _ in range(3)] == [2, 3, 0]


def _fullurls_resolve(bundle: dict[str, Any]) -> None:
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    for entry in bundle["entry"]:
        for path, value in iter_references(entry["resource"]):
            assert value in full_urls, f"{entry['request']['url']} {path} = {value}"


def test_every_delivery_has_a_valid_bundle_whose_references_resolve(runtime, flow, partners):
    route_pending(runtime)
    for row in _deliveries(runtime):
        bundle = _payload(runtime, row)
        assert _errors(bundle) == [], (row.event_type, _errors(bundle))
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            assert _errors(entry["resource"]) == [], entry["request"]
            assert "id" not in entry["resource"]
            assert "versionId" not in entry["resource"].get("meta", {})
        _fullurls_resolve(bundle)
        assert _payload(runtime, row) == bundle  # rebuilt: the same


def test_the_session_bundle_carries_the_visit_and_the_referral_task(runtime, flow, partners):
    route_pending(runtime)
    [row] = [
        d for d in _deliveries(runtime, partners["payer"]) if d.event_type == "session.documented"
    ]
    bundle = _payload(runtime, row)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[0] == "Patient"
    assert kinds[-1] == "Task"
    assert "Procedure" in kinds
    assert "Observation" in kinds
    patient, *rest = bundle["entry"]
    assert patient["request"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": f"identifier={BASE}/mrn|P-1001",
    }
    assert all(e["request"]["method"] == "PUT" for e in rest)
    procedure = next(e for e in rest if e["resource"]["resourceType"] == "Procedure")
    assert procedure["request"]["url"] == f"Procedure?identifier={BASE}/session|V-1/procedure"
    assert procedure["resource"]["subject"] == {"reference": patient["fullUrl"]}
    # the ServiceRequest is the EHR's: named by its placer identifier, not our id
    [based_on] = procedure["resource"]["basedOn"]
    assert based_on["identifier"]["value"] == "SR-8891"
    assert "reference" not in based_on
    task = bundle["entry"][-1]
    assert task["request"]["url"].startswith(f"Task?identifier={BASE}/referral-task|")
    assert task["resource"]["output"][0]["valueReference"] == {"reference": procedure["fullUrl"]}
    assert task["resource"]["status"] == "in-progress"


def test_a_referral_bundle_is_the_task_by_its_identifier(runtime, flow, partners):
    route_pending(runtime)
    [accepted] = [
        d for d in _deliveries(runtime, partners["ehr"]) if d.event_type == "referral.accepted"
    ]
    bundle = _payload(runtime, accepted)
    [entry] = bundle["entry"]
    assert entry["resource"]["resourceType"] == "Task"
    assert entry["request"] == {
        "method": "PUT",
        "url": f"Task?identifier={BASE}/referral-task|{flow['service_request']}",
    }
    assert entry["resource"]["focus"]["identifier"]["value"] == "SR-8891"
    assert entry["resource"]["requester"]["identifier"] == {"system": NPI, "value": REQUESTER}


def test_a_payload_whose_resource_is_gone_says_so(runtime, flow, partners):
    route_pending(runtime)
    [row] = [
        d for d in _deliveries(runtime, partners["payer"]) if d.event_type == "session.documented"
    ]
    with write_session(runtime.sessions) as s:
        ResourceStore(s).delete("Procedure", flow["procedure"])
    with pytest.raises(PayloadSourceGone, match="Procedure"):
        _payload(runtime, row)


def test_a_batch_builds_the_same_bundles_as_one_at_a_time_and_isolates_a_broken_one(
    client, runtime, flow, partners
):
    second = post_session(client, session("V-2"))
    assert second.status_code == 201, second.get_json()
    [gone] = [r["id"] for r in second.get_json()["resources"] if r["resourceType"] == "Procedure"]
    route_pending(runtime)
    rows = _deliveries(runtime)
    events = sorted({d.outbox_pk for d in rows})
    base = runtime.settings.clinic_system_base
    with read_session(runtime.sessions) as s:
        one_by_one = {pk: build_payload(s, _Event(pk), clinic_system_base=base) for pk in events}
        together = build_payloads(s, events, clinic_system_base=base)
    assert together == one_by_one
    assert len(events) >= 5  # the referral's events and both visits
    with write_session(runtime.sessions) as s:
        ResourceStore(s).delete("Procedure", gone)
    with read_session(runtime.sessions) as s:
        after = build_payloads(s, events, clinic_system_base=base)
        broken = {pk for pk, result in after.items() if isinstance(result, Exception)}
        assert len(broken) == 1
        [result] = [after[pk] for pk in broken]
        assert isinstance(result, PayloadSourceGone)
        assert gone in str(result)
        for pk in set(events) - broken:  # the others still build, as they would alone
            assert after[pk] == build_payload(s, _Event(pk), clinic_system_base=base)


@dataclass(frozen=True)
class _Event:
    outbox_pk: int


def test_enqueue_is_idempotent_and_list_filters(runtime, flow, partners):
    with write_session(runtime.sessions) as s:
        [event, *_] = OutboxWriter(s).pending()
        store = DeliveryStore(s)
        assert store.enqueue(partners["ehr"], event, now=T0) is True
        assert store.enqueue(partners["ehr"], event, now=T0) is False
        assert store.enqueue(partners["payer"], event, now=T0) is True
    with read_session(runtime.sessions) as s:
        store = DeliveryStore(s)
        first, second = store.list()
        assert (first.partner_pk, first.outbox_pk, first.next_attempt_at) == (
            partners["ehr"],
            event.pk,
            T0,
        )
        assert store.get(first.pk) == first
        assert store.get(999_999) is None
        assert store.list(partner_pk=partners["payer"]) == [second]
        assert store.list(after_pk=first.pk) == [second]
        assert store.list(status="dead") == []
        assert store.list(event_type=event.event_type, patient_id="pat-rivera", limit=1) == [first]
        assert store.list(since=T0 + timedelta(seconds=1)) == []
    # routing later does not duplicate the hand-made rows
    assert route_pending(runtime) == 4


# --- the pure parts ----------------------------------------------------------------------


def _row(pk: int, identifiers: list[dict[str, str]], events: tuple[str, ...], enabled=True):
    return PartnerRow(
        pk=pk,
        key=f"p{pk}",
        name="",
        kind="physician",
        base_url="",
        events=events,
        identifiers=tuple(identifiers),
        auth_kind="none",
        auth={},
        enabled=enabled,
        created_at=T0,
        updated_at=T0,
    )


def test_recipients_follow_identifiers_subscriptions_and_event_kind():
    payer_system = "https://payers.example.org/payer-id"
    doc = _row(2, [{"system": NPI, "value": "1"}], EVENT_TYPES)
    payer = _row(1, [{"system": payer_system, "value": "P"}], EVENT_TYPES)
    off = _row(3, [{"system": NPI, "value": "1"}], EVENT_TYPES, enabled=False)
    facts = RoutingFacts(requester_npis=("1",), payer_ids=("P",))
    everyone = [doc, payer, off]
    assert recipients("session.documented", facts, everyone, payer_id_system=payer_system) == [
        payer,
        doc,
    ]
    # referral events never go to payers, even when a payer id is known
    assert recipients("referral.accepted", facts, everyone, payer_id_system=payer_system) == [doc]
    assert (
        recipients("session.documented", RoutingFacts(), everyone, payer_id_system=payer_system)
        == []
    )


def _event(pk: int, created: datetime) -> Event:
    return Event(pk, created, "referral.received", "Task", "t", 1, None, {})


def test_a_fresh_gap_in_outbox_ids_holds_later_events_back():
    now = T0
    fresh, old = now - timedelta(seconds=1), now - GAP_GRACE - timedelta(seconds=1)
    assert [e.pk for e in _settled([_event(1, fresh), _event(3, fresh)], 0, now)] == [1]
    assert [e.pk for e in _settled([_event(1, fresh), _event(3, old)], 0, now)] == [1, 3]
    assert [e.pk for e in _settled([_event(5, fresh)], 4, now)] == [5]


def test_a_fresh_gap_is_passed_when_no_writer_could_still_fill_it():
    now = T0
    fresh = now - timedelta(seconds=1)
    asked: list[bool] = []

    def quiet() -> bool:
        asked.append(True)
        return True

    events = [_event(1, fresh), _event(3, fresh), _event(5, fresh)]
    assert [e.pk for e in _settled(events, 0, now, quiet=quiet)] == [1, 3, 5]
    assert asked == [True]  # asked once per routing pass


def _stored(resource_id: str) -> StoredResource:
    return StoredResource("ServiceRequest", resource_id, 1, T0, False, b"{}", 1)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def test_the_router_passes_a_rolled_back_gap_without_waiting(runtime):
    """A write that took an outbox id and rolled back leaves a gap; with no writer left open
    the events after it are routed at once, not after GAP_GRACE."""
    with suppress(RuntimeError), write_session(runtime.sessions) as s:
        OutboxWriter(s).emit("referral.received", _stored("sr-gap"), at=T0, patient_id=None)
        raise RuntimeError("rolled back")
    with write_session(runtime.sessions) as s:
        OutboxWriter(s).emit("referral.received", _stored("sr-after"), at=utcnow(), patient_id=None)
    route_pending(runtime, now=utcnow())
    with read_session(runtime.sessions) as s:
        cursor = s.scalar(select(OutboxCursor.last_pk).where(OutboxCursor.name == "router"))
        last = s.scalar(select(func.max(OutboxEvent.pk)))
    assert cursor == last
