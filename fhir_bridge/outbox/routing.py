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
* ``report.generated`` (resource: a progress report's DocumentReference version): the
  referring physician of the ServiceRequest in its ``context.related``, and the patient's payer
  as for a visit, but a payer only when its ``events`` name the type (it is never a default).

A partner receives an event only when ``partner.receives(event_type)`` (enabled, subscribed).

Outbox ids are handed out before commit, so on PostgreSQL an event may become visible after a
later one was routed. The router therefore stops before a gap in the ids until the event after
the gap is ``GAP_GRACE`` old; a gap older than that is a rolled-back write and is passed.
A gap is passed at once when no other transaction that has written anything is open
(``_no_other_writer``): only an open writer could still fill it. On SQLite that always holds
(the router holds the one write lock); on PostgreSQL it is read from ``pg_stat_activity``, which
shows other sessions' transaction ids to the same database role (the bridge's processes share
one; a role of its own per process would need ``pg_read_all_stats``). So a rolled-back session
(two nodes racing on one visit roll back and retry) delays routing only while writers are busy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from fhir_bridge.fhir.npi import NPI_SYSTEM
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import write_session
from fhir_bridge.store.deliveries import DeliveryStore
from fhir_bridge.store.models import OutboxCursor
from fhir_bridge.store.outbox import Event, OutboxWriter
from fhir_bridge.store.partners import PartnerRow, PartnerStore
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore

CURSOR = "router"
#: event types a payer may receive (when its partner entry names them)
PAYER_EVENT_TYPES = ("session.documented", "report.generated")
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
    (``PAYER_EVENT_TYPES`` only); always only partners that ``receive`` the event type.
    """
    payer_ids = facts.payer_ids if event_type in PAYER_EVENT_TYPES else ()
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
    if event.event_type == "report.generated":
        document = store.get(event.resource_type, event.resource_id)
        context = (document.resource.get("context") or {}) if document else {}
        rows = [
            referrals.get(ref.partition("/")[2])
            for ref in _references(context.get("related"))
            if ref.startswith("ServiceRequest/")
        ]
        return RoutingFacts(
            requester_npis=_npis(rows),
            payer_ids=_payer_ids(store, event.patient_id, payer_id_system)
            if event.patient_id
            else (),
        )
    if event.event_type.startswith("referral."):
        if event.resource_type == "Task":
            row = referrals.by_task(event.resource_id)
        else:
            row = referrals.get(event.resource_id)
        return RoutingFacts(requester_npis=_npis([row]))
    return RoutingFacts()


class Runtime(Protocol):
    """What routing needs of the runtime (``services.runtime.Runtime`` is one)."""

    @property
    def settings(self) -> Settings:
        """The bridge's settings (``payer_id_system``)."""
        ...

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The database's session factory."""
        ...


def route_pending(runtime: Runtime, *, limit: int = 500, now: datetime | None = None) -> int:
    """Route up to ``limit`` outbox events after the cursor; the number of deliveries created."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    payer_id_system = runtime.settings.payer_id_system
    created = 0
    with write_session(runtime.sessions) as session:
        after = _lock_cursor(session)
        events = _settled(
            OutboxWriter(session).pending(after_pk=after, limit=limit),
            after,
            now,
            quiet=lambda: _no_other_writer(session),
        )
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


def _settled(
    events: Sequence[Event],
    after: int,
    now: datetime,
    quiet: Callable[[], bool] = lambda: False,
) -> list[Event]:
    """The leading events up to the first gap in ids that may still be filled.

    ``quiet()`` (asked once, at the first young gap) tells that no transaction that could
    fill a gap is open: every gap is then settled.
    """
    out: list[Event] = []
    expected = after + 1
    calm: bool | None = None
    for event in events:
        if event.pk != expected and event.created_at > now - GAP_GRACE:
            calm = quiet() if calm is None else calm
            if not calm:
                break
        out.append(event)
        expected = event.pk + 1
    return out


def _no_other_writer(session: Session) -> bool:
    """True when no other transaction with writes is open on this database (see the module
    docstring). SQLite: always (the router's transaction holds the write lock)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return not session.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
            # another router waiting for our cursor lock holds no outbox id
            " AND NOT pg_backend_pid() = ANY (pg_blocking_pids(pid)))"
        )
    ).scalar_one()


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
