"""The clinic's side of referrals: the inbox, and accept / decline / complete.

Each action moves the referral's Task one step (``mapping.referral_task``), updates the inbox
row and writes the outbox event for the referring physician, all in one transaction. An
action the Task's state does not allow is a 409 naming what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.mapping.referral_task import IllegalTransition, allowed_actions, transition
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.services.report_documents import configured_tables, file_report
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.outbox import OutboxWriter
from fhir_bridge.store.referrals import ReferralFilter as ReferralFilter
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore

#: clinic actions and the outbox event each one writes
ACTION_EVENTS = {
    "accept": "referral.accepted",
    "decline": "referral.declined",
    "complete": "referral.completed",
}


_PAST = {"accept": "accepted", "decline": "declined", "complete": "completed"}


@dataclass(frozen=True)
class ActionOutcome:
    """The referral after an action, and the Task version the action produced."""

    referral: ReferralRow
    task_version: int


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def list_referrals(runtime: Runtime, filters: ReferralFilter) -> list[ReferralRow]:
    """Inbox rows in arrival order."""
    with read_session(runtime.sessions) as session:
        return ReferralStore(session).list(filters)


def get_referral(runtime: Runtime, referral_id: str) -> ReferralRow:
    """One referral (its id is its ServiceRequest's id); 404 when unknown."""
    with read_session(runtime.sessions) as session:
        row = ReferralStore(session).get(referral_id)
    if row is None:
        raise FhirError(404, error("not-found", "No referral with that id", "id"))
    return row


def act(
    runtime: Runtime,
    referral_id: str,
    action: str,
    *,
    reason: str | None = None,
    tables: MappingTables | None = None,
) -> ActionOutcome:
    """Accept, decline (``reason`` required) or complete a referral.

    Completing it files the discharge summary (``services.report_documents``) in the same
    transaction, rendered with ``tables`` (the app's mappings; default: the configured ones).
    """
    if action not in ACTION_EVENTS:
        raise FhirError(404, error("not-found", f"No action {action!r}", "action"))
    if action == "decline" and not (reason or "").strip():
        raise FhirError(422, error("required", "Declining a referral needs a reason", "reason"))
    with write_session(runtime.sessions) as session:
        referrals = ReferralStore(session)
        store = ResourceStore(session)
        row = referrals.get(referral_id, for_update=True)
        if row is None:
            raise FhirError(404, error("not-found", "No referral with that id", "id"))
        task = store.get("Task", row.task_id)
        if task is None:
            raise FhirError(409, error("conflict", "The referral's Task is gone", "task"))
        now = _now()
        try:
            body = transition(task.resource, action, now=now, reason=reason)
        except IllegalTransition:
            allowed = [a for a in allowed_actions(row.status) if a in ACTION_EVENTS]
            message = (
                f"A referral that is {row.status} cannot be {_PAST[action]}; "
                f"allowed now: {', '.join(allowed) or 'nothing'}"
            )
            raise FhirError(409, error("business-rule", message, "action")) from None
        stored, _ = store.update(body)
        updated = replace(row, status=str(body["status"]), updated_at=now)
        referrals.save(updated)
        OutboxWriter(session).emit(
            ACTION_EVENTS[action],
            stored,
            at=now,
            patient_id=row.patient_id,
            detail={"service_request": f"ServiceRequest/{row.service_request_id}"},
        )
        if action == "complete":
            file_report(
                store,
                row.service_request_id,
                "discharge",
                tables=tables or configured_tables(runtime.settings),
                settings=runtime.settings,
                now=now,
            )
        return ActionOutcome(referral=updated, task_version=stored.version_id)


def referral_view(row: ReferralRow) -> dict[str, Any]:
    """The referral as the inbox shows it."""
    return {
        "id": row.service_request_id,
        "status": row.status,
        "allowed_actions": [a for a in allowed_actions(row.status) if a in ACTION_EVENTS],
        "service_request": f"ServiceRequest/{row.service_request_id}",
        "task": f"Task/{row.task_id}",
        "placer_identifier": {"system": row.placer_system, "value": row.placer_value},
        "patient": f"Patient/{row.patient_id}" if row.patient_id else None,
        "patient_match": row.patient_match,
        "requester": {"reference": row.requester_reference, "npi": row.requester_npi},
        "authored_on": row.authored_on.isoformat() + "Z" if row.authored_on else None,
        "prescribed": {
            "visits": row.visits_prescribed,
            "frequency": row.frequency,
            "expires_on": row.expires_on.isoformat() if row.expires_on else None,
        },
        "visits_used": row.visits_used,
        "visits_left": row.visits_left,
        "warnings": row.warnings,
        "changes": row.changes,
        "received_at": row.received_at.isoformat() + "Z",
        "updated_at": row.updated_at.isoformat() + "Z",
    }
