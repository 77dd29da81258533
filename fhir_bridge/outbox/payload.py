"""The Bundle a delivery sends: read the current resources, hand them to the pure builder.

Runs in the caller's session (the worker builds a row's payload once and stores it, so a
retry resends the same bytes). The resources are read as they are *now*: a delivery built
after a later change carries the later state, which the partner's conditional updates accept.
``build_payloads`` builds a worker's whole batch from a handful of set-based reads;
``build_payload`` is the same for one event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fhir_bridge.mapping.delivery_bundle import referral_bundle, relative_references, session_bundle
from fhir_bridge.outbox.report_payload import report_payload
from fhir_bridge.store.models import OutboxEvent
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore, StoredResource


class PayloadSourceGone(LookupError):
    """What the delivery is about (its outbox event, or the resource the event names) is gone."""


class AboutAnEvent(Protocol):
    """A delivery as the worker (``queue.Job``) or the log (``DeliveryRow``) sees it."""

    @property
    def outbox_pk(self) -> int:
        """The outbox event the delivery carries."""
        ...


def build_payload(
    session: Session, delivery: AboutAnEvent, *, clinic_system_base: str
) -> dict[str, Any]:
    """The transaction Bundle for ``delivery`` (see ``mapping.delivery_bundle``).

    :raise PayloadSourceGone: the outbox event, the event's resource, the Procedure's patient
        or the referral's Task is no longer on file (or deleted).
    """
    pk = delivery.outbox_pk
    result = build_payloads(session, [pk], clinic_system_base=clinic_system_base)[pk]
    if isinstance(result, Exception):
        raise result
    return result


def build_payloads(
    session: Session, outbox_pks: Iterable[int], *, clinic_system_base: str
) -> dict[int, dict[str, Any] | Exception]:
    """The transaction Bundles of several outbox events, keyed by event pk.

    Visits are read together: a handful of set-based queries for the whole set (events,
    procedures, observations, patients and goals, referrals, Tasks, linked resources), not a
    handful per event. An event whose Bundle cannot be built maps to the exception
    (``PayloadSourceGone``, ``BundleInputError`` ...); a failing database read raises.
    """
    wanted = list(dict.fromkeys(outbox_pks))
    events = {
        e.pk: e for e in session.scalars(select(OutboxEvent).where(OutboxEvent.pk.in_(wanted)))
    }
    store = ResourceStore(session)
    out: dict[int, dict[str, Any] | Exception] = {}
    visits: dict[int, OutboxEvent] = {}
    for pk in wanted:
        event = events.get(pk)
        if event is None:
            out[pk] = PayloadSourceGone(f"outbox event {pk} is gone")
        elif event.event_type == "session.documented":
            visits[pk] = event
        elif (builder := builder_for(event.event_type)) is not None:
            out[pk] = _attempt(lambda e=event, b=builder: b(store, e, clinic_system_base))
        else:
            out[pk] = ValueError(f"no payload for event type {event.event_type!r}")
    out.update(_visit_payloads(store, visits, clinic_system_base))
    return out


def _attempt(build: Callable[[], dict[str, Any]]) -> dict[str, Any] | Exception:
    """``build()``, or the exception it raised about the data (database errors propagate)."""
    try:
        return build()
    except SQLAlchemyError:
        raise
    except Exception as exc:
        return exc


@dataclass
class _Visit:
    """What one visit's Bundle is made of, as it is gathered."""

    procedure: dict[str, Any]
    subject: str
    observations: list[dict[str, Any]]
    goal_keys: list[tuple[str, str]]
    patient: dict[str, Any] | None = None
    goals: list[dict[str, Any]] = field(default_factory=list)
    task: dict[str, Any] | None = None


def _visit_payloads(
    store: ResourceStore, visits: Mapping[int, OutboxEvent], clinic_system_base: str
) -> dict[int, dict[str, Any] | Exception]:
    out: dict[int, dict[str, Any] | Exception] = {}
    refs = {pk: f"{e.resource_type}/{e.resource_id}" for pk, e in visits.items()}
    procedures = store.get_many(_key(r) for r in refs.values())
    observations = store.referencing_many("Observation", "part-of", refs.values())
    gathered: dict[int, _Visit] = {}
    for pk, ref in refs.items():
        stored = procedures.get(_key(ref))
        if stored is None:
            out[pk] = PayloadSourceGone(f"the documented visit: {ref} is gone")
            continue
        procedure = stored.resource
        subject = (procedure.get("subject") or {}).get("reference")
        if not isinstance(subject, str):
            out[pk] = PayloadSourceGone(f"{ref} names no patient")
            continue
        obs = [o.resource for o in observations.get(ref, [])]
        goal_keys = sorted(
            _key(r) for r in relative_references([procedure, *obs]) if r.startswith("Goal/")
        )
        gathered[pk] = _Visit(procedure, subject, obs, goal_keys)
    # one query for every patient and goal, one for the referrals, one for their Tasks
    people = store.get_many(k for v in gathered.values() for k in (_key(v.subject), *v.goal_keys))
    referrals = ReferralStore(store.session).get_many(
        sr for v in gathered.values() for sr in _based_on(v.procedure)
    )
    tasks = store.get_many(("Task", row.task_id) for row in referrals.values())
    for pk, visit in list(gathered.items()):
        patient = people.get(_key(visit.subject))
        if patient is None:
            out[pk] = PayloadSourceGone(f"the visit's patient: {visit.subject} is gone")
            del gathered[pk]
            continue
        visit.patient = patient.resource
        visit.goals = [people[k].resource for k in visit.goal_keys if k in people]
        visit.task = _first_task(visit.procedure, referrals, tasks)
    # one query for everything the Bundles reference but do not carry
    sent = {pk: _sent(v) for pk, v in gathered.items()}
    missing = {pk: _not_carried(resources) for pk, resources in sent.items()}
    linked = store.get_many(_key(r) for refs_of in missing.values() for r in refs_of)
    for pk, visit in gathered.items():
        out[pk] = _attempt(
            lambda v=visit, pk=pk: session_bundle(
                patient=v.patient or {},
                procedure=v.procedure,
                observations=v.observations,
                goals=v.goals,
                task=v.task,
                linked={r: linked[_key(r)].resource for r in missing[pk] if _key(r) in linked},
                clinic_system_base=clinic_system_base,
            )
        )
    return out


def _sent(visit: _Visit) -> list[dict[str, Any]]:
    carried = [visit.patient, visit.procedure, *visit.observations, *visit.goals, visit.task]
    return [r for r in carried if r is not None]


def _not_carried(sent: list[dict[str, Any]]) -> list[str]:
    """References of the sent resources to resources the Bundle does not carry."""
    carried = {f"{r['resourceType']}/{r['id']}" for r in sent}
    return sorted(relative_references(sent) - carried)


def _based_on(procedure: Mapping[str, Any]) -> list[str]:
    """The ServiceRequest ids in a Procedure's ``basedOn``, in order."""
    out = []
    for based_on in procedure.get("basedOn") or []:
        ref = based_on.get("reference") if isinstance(based_on, dict) else None
        if isinstance(ref, str) and ref.startswith("ServiceRequest/"):
            out.append(ref.partition("/")[2])
    return out


def _first_task(
    procedure: Mapping[str, Any],
    referrals: Mapping[str, ReferralRow],
    tasks: Mapping[tuple[str, str], StoredResource],
) -> dict[str, Any] | None:
    """The Task of the first referral (ServiceRequest in ``basedOn``) on file, if any."""
    for sr_id in _based_on(procedure):
        row = referrals.get(sr_id)
        if row is not None and ("Task", row.task_id) in tasks:
            return tasks[("Task", row.task_id)].resource
    return None


def _required(store: ResourceStore, reference: str, why: str) -> dict[str, Any]:
    found = store.get(*_key(reference))
    if found is None:
        raise PayloadSourceGone(f"{why}: {reference} is gone")
    return found.resource


def _referral_payload(
    store: ResourceStore, event: OutboxEvent, clinic_system_base: str
) -> dict[str, Any]:
    if event.resource_type == "Task":
        task = _required(store, f"Task/{event.resource_id}", "the referral's Task")
    else:
        row = ReferralStore(store.session).get(event.resource_id)
        detail = json.loads(event.detail or "{}")
        task_ref = f"Task/{row.task_id}" if row is not None else detail.get("task")
        if not isinstance(task_ref, str):
            raise PayloadSourceGone(f"the referral of {event.resource_type}/{event.resource_id}")
        task = _required(store, task_ref, "the referral's Task")
    return referral_bundle(
        task=task, linked=_linked(store, [task]), clinic_system_base=clinic_system_base
    )


#: (store, event, clinic system base) -> the Bundle of one event
EventBuilder = Callable[[ResourceStore, OutboxEvent, str], dict[str, Any]]
#: the Bundle builder of each event type built one event at a time, by exact type or by a
#: prefix ending in "." (``session.documented`` visits are read together by
#: ``_visit_payloads``); a new event type is one more row here (and its routing rule)
EVENT_BUILDERS: dict[str, EventBuilder] = {
    "report.generated": report_payload,
    "referral.": _referral_payload,
}


def builder_for(event_type: str) -> EventBuilder | None:
    """The builder of ``event_type``'s Bundle: its exact row, else its prefix's."""
    if event_type in EVENT_BUILDERS:
        return EVENT_BUILDERS[event_type]
    for prefix, builder in EVENT_BUILDERS.items():
        if prefix.endswith(".") and event_type.startswith(prefix):
            return builder
    return None


def _key(reference: str) -> tuple[str, str]:
    resource_type, _, resource_id = reference.partition("/")
    return resource_type, resource_id


def _linked(store: ResourceStore, sent: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Resources the sent ones reference but the Bundle does not carry (for logical refs),
    read in one query."""
    found = store.get_many(_key(r) for r in _not_carried(sent))
    return {f"{t}/{i}": stored.resource for (t, i), stored in sorted(found.items())}
