"""Routing: turn new outbox events into one delivery row per partner that must receive them.

``route_pending`` reads the outbox after the ``router`` cursor in one write transaction (the
cursor row is locked, so concurrent routers take turns), gathers the facts each event's
recipients depend on (``gather_facts``: database reads), decides the recipients
(``recipients``: pure) and enqueues deliveries; the cursor moves past every event read, with
or without recipients.

Who receives what:

* ``session.documented`` (resource: the visit's Procedure): the physician partner known by the
  NPI of the requester of the referral the Procedure is based on (``basedOn`` ServiceRequest ->
  inbox row -> ``requester_npi``), and the payer partner known by the payer id of the patient's
  active Coverage's payor Organization (its identifier under ``settings.payer_id_system``).
* ``referral.*`` (resource: the referral's Task or ServiceRequest): the referring physician.

A partner receives an event only when ``partner.receives(event_type)`` (enabled, subscribed).

Outbox ids are handed out before commit, so on PostgreSQL an event may become visible after a
later one was routed. The router therefore stops before a gap in the ids until the event after
the gap is ``GAP_GRACE`` old; a gap older than that is a rolled-back write and is passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fhir_bridge.fhir.npi import NPI_SYSTEM
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import write_session
from fhir_bridge.store.deliveries import DeliveryStore
from fhir_bridge.store.models import OutboxCursor
from fhir_bridge.store.outbox import Event, OutboxWriter
from fhir_bridge.store.partners import PartnerRow, PartnerStore
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore

CURSOR = "router"
#: how long a gap in outbox ids may be an uncommitted write (later events wait for it)
GAP_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class RoutingFacts:
    """What the recipients of one event depend on: the referring NPIs and the payer ids."""

    requester_npis: tuple[str, ...] = ()
    payer_ids: tuple[str, ...] = ()


def recipients(
    event_type: str,
    facts: RoutingFacts,
    partners: Iterable[PartnerRow],
    *,
    payer_id_system: str,
) -> list[PartnerRow]:
    """The partners that receive an event (pure), by ``pk``, each once.

    Physicians by the referring NPI (every event type); payers by payer id
    (``session.documented`` only); always only partners that ``receive`` the event type.
    """
    payer_ids = facts.payer_ids if event_type == "session.documented" else ()
    chosen = {
        p.pk: p
        for p in partners
        if p.receives(event_type)
        and (
            any(p.has_identifier(NPI_SYSTEM, npi) for npi in facts.requester_npis)
            or any(p.has_identifier(payer_id_system, pid) for pid in payer_ids)
        )
    }
    return [chosen[pk] for pk in sorted(chosen)]


def gather_facts(session: Session, event: Event, *, payer_id_system: str) -> RoutingFacts:
    """Read what ``recipients`` needs for ``event`` (the referral row, the Coverage)."""
    store = ResourceStore(session)
    referrals = ReferralStore(session)
    if event.event_type == "session.documented":
        procedure = store.get(event.resource_type, event.resource_id)
        if procedure is None:
            return RoutingFacts()
        rows = [
            referrals.get(ref.partition("/")[2])
            for ref in _references(procedure.resource.get("basedOn"))
            if ref.startswith("ServiceRequest/")
        ]
        subject = _references([procedure.resource.get("subject")])
        patient = event.patient_id or (subject[0].partition("/")[2] if subject else None)
        return RoutingFacts(
            requester_npis=_npis(rows),
            payer_ids=_payer_ids(store, patient, payer_id_system) if patient else (),
        )
    if event.event_type.startswith("referral."):
        if event.resource_type == "Task":
            row = referrals.by_task(event.resource_id)
        else:
            row = referrals.get(event.resource_id)
        return RoutingFacts(requester_npis=_npis([row]))
    return RoutingFacts()


def route_pending(runtime: Runtime, *, limit: int = 500, now: datetime | None = None) -> int:
    """Route up to ``limit`` outbox events after the cursor; the number of deliveries created."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    payer_id_system = runtime.settings.payer_id_system
    created = 0
    with write_session(runtime.sessions) as session:
        after = _lock_cursor(session)
        events = _settled(OutboxWriter(session).pending(after_pk=after, limit=limit), after, now)
        if not events:
            return 0
        partners = PartnerStore(session).enabled()
        deliveries = DeliveryStore(session)
        for event in events:
            facts = gather_facts(session, event, payer_id_system=payer_id_system)
            for partner in recipients(
                event.event_type, facts, partners, payer_id_system=payer_id_system
            ):
                created += deliveries.enqueue(partner.pk, event, now=now)
        session.execute(
            update(OutboxCursor).where(OutboxCursor.name == CURSOR).values(last_pk=events[-1].pk)
        )
    return created


def _settled(events: Sequence[Event], after: int, now: datetime) -> list[Event]:
    """The leading events up to the first gap in ids that may still be filled."""
    out: list[Event] = []
    expected = after + 1
    for event in events:
        if event.pk != expected and event.created_at > now - GAP_GRACE:
            break
        out.append(event)
        expected = event.pk + 1
    return out


def _lock_cursor(session: Session) -> int:
    """The router's cursor, created at 0 when missing, locked for this transaction."""
    values = {"name": CURSOR, "last_pk": 0}
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(OutboxCursor).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(OutboxCursor).values(**values).on_conflict_do_nothing()
    session.execute(stmt)
    return session.execute(
        select(OutboxCursor.last_pk).where(OutboxCursor.name == CURSOR).with_for_update()
    ).scalar_one()


def _references(values: object) -> list[str]:
    if not isinstance(values, list):
        return []
    return [
        v["reference"]
        for v in values
        if isinstance(v, dict) and isinstance(v.get("reference"), str)
    ]


def _npis(rows: Iterable[ReferralRow | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.requester_npi for r in rows if r and r.requester_npi))


def _payer_ids(store: ResourceStore, patient_id: str, payer_id_system: str) -> tuple[str, ...]:
    """Payer ids of the payor Organizations of the patient's active Coverages."""
    found: list[str] = []
    for coverage in store.search_references("Coverage", "beneficiary", f"Patient/{patient_id}"):
        if coverage.resource.get("status") != "active":
            continue
        for ref in _references(coverage.resource.get("payor")):
            if not ref.startswith("Organization/"):
                continue
            org = store.get("Organization", ref.partition("/")[2])
            for ident in (org.resource.get("identifier") or []) if org else []:
                if isinstance(ident, dict) and ident.get("system") == payer_id_system:
                    found.append(str(ident.get("value")))
    return tuple(dict.fromkeys(found))
