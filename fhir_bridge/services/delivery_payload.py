"""The Bundle one delivery sends: read the current resources, hand them to the pure builder.

Runs in the caller's session (the worker builds a row's payload once and stores it, so a
retry resends the same bytes). The resources are read as they are *now*: a delivery built
after a later change carries the later state, which the partner's conditional updates accept.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from sqlalchemy.orm import Session

from fhir_bridge.mapping.delivery_bundle import referral_bundle, relative_references, session_bundle
from fhir_bridge.store.models import OutboxEvent
from fhir_bridge.store.referrals import ReferralStore
from fhir_bridge.store.repository import ResourceStore

GOAL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"


class PayloadSourceGone(LookupError):
    """What the delivery is about (its outbox event, or the resource the event names) is gone."""


class AboutAnEvent(Protocol):
    """A delivery as the worker (``delivery_queue.Job``) or the log (``DeliveryRow``) sees it."""

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
    event = session.get(OutboxEvent, delivery.outbox_pk)
    if event is None:
        raise PayloadSourceGone(f"outbox event {delivery.outbox_pk} is gone")
    store = ResourceStore(session)
    if event.event_type == "session.documented":
        return _session_payload(store, event, clinic_system_base)
    if event.event_type.startswith("referral."):
        return _referral_payload(store, event, clinic_system_base)
    raise ValueError(f"no payload for event type {event.event_type!r}")


def _required(store: ResourceStore, reference: str, why: str) -> dict[str, Any]:
    resource_type, _, resource_id = reference.partition("/")
    found = store.get(resource_type, resource_id)
    if found is None:
        raise PayloadSourceGone(f"{why}: {reference} is gone")
    return found.resource


def _session_payload(
    store: ResourceStore, event: OutboxEvent, clinic_system_base: str
) -> dict[str, Any]:
    reference = f"{event.resource_type}/{event.resource_id}"
    procedure = _required(store, reference, "the documented visit")
    subject = (procedure.get("subject") or {}).get("reference")
    if not isinstance(subject, str):
        raise PayloadSourceGone(f"{reference} names no patient")
    observations = [
        o.resource for o in store.search_references("Observation", "part-of", reference)
    ]
    goal_keys = sorted(
        _key(r) for r in relative_references([procedure, *observations]) if r.startswith("Goal/")
    )
    found = store.get_many([_key(subject), *goal_keys])  # one query for the patient and goals
    if _key(subject) not in found:
        raise PayloadSourceGone(f"the visit's patient: {subject} is gone")
    patient = found[_key(subject)].resource
    goals = [found[k].resource for k in goal_keys if k in found]
    task = _task_of_visit(store, procedure)
    sent = [patient, procedure, *observations, *goals, *([task] if task else [])]
    return session_bundle(
        patient=patient,
        procedure=procedure,
        observations=observations,
        goals=goals,
        task=task,
        linked=_linked(store, sent),
        clinic_system_base=clinic_system_base,
    )


def _task_of_visit(store: ResourceStore, procedure: dict[str, Any]) -> dict[str, Any] | None:
    """The Task of the first referral (ServiceRequest in ``basedOn``) on file, if any."""
    referrals = ReferralStore(store.session)
    for based_on in procedure.get("basedOn") or []:
        ref = based_on.get("reference") if isinstance(based_on, dict) else None
        if not isinstance(ref, str) or not ref.startswith("ServiceRequest/"):
            continue
        row = referrals.get(ref.partition("/")[2])
        if row is not None:
            task = store.get("Task", row.task_id)
            if task is not None:
                return task.resource
    return None


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


def _key(reference: str) -> tuple[str, str]:
    resource_type, _, resource_id = reference.partition("/")
    return resource_type, resource_id


def _linked(store: ResourceStore, sent: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Resources the sent ones reference but the Bundle does not carry (for logical refs),
    read in one query."""
    carried = {f"{r['resourceType']}/{r['id']}" for r in sent}
    found = store.get_many(_key(r) for r in sorted(relative_references(sent) - carried))
    return {f"{t}/{i}": stored.resource for (t, i), stored in sorted(found.items())}
