"""A documented visit moves its referral on: visits used, the Task's status and outputs, events.

Runs in the session's write transaction (``services.sessions``), so the visit, the referral's
counters, the new Task version and the outbox events commit together or not at all.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime

from fhir_bridge.mapping.referral_task import add_output, remove_output, transition
from fhir_bridge.mapping.session import Flag
from fhir_bridge.store.outbox import OutboxWriter
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore, StoredResource

#: flags a visit may get from its referral's state
PROGRESS_FLAGS = frozenset(
    {"referral-closed", "referral-not-accepted", "referral-visits-exceeded", "referral-expired"}
)
#: Task statuses in which a referral still takes visits
OPEN_STATUSES = ("requested", "received", "accepted", "in-progress")


def _counted(procedure: StoredResource) -> bool:
    return procedure.resource.get("status") != "entered-in-error"


class ReferralProgress:
    """Applies one documented (or retracted) visit to the referral it is based on."""

    def __init__(self, store: ResourceStore, now: datetime) -> None:
        self.store = store
        self.now = now
        self.referrals = ReferralStore(store.session)
        self.outbox = OutboxWriter(store.session)

    def visit(
        self, service_request_id: str, procedure: StoredResource, *, visit_date: date
    ) -> list[Flag]:
        """Count the visit, move the Task, emit events; flags for staff (never a refusal)."""
        row = self.referrals.get(service_request_id, for_update=True)
        if row is None:
            return []
        task = self.store.get("Task", row.task_id)
        counted = _counted(procedure)
        flags = self._flags(row, counted, visit_date)
        status = row.status
        if task is not None:
            task, status = self._move_task(task, procedure, counted)
        used = self._visits_used(service_request_id)
        self.referrals.save(replace(row, visits_used=used, status=status, updated_at=self.now))
        if task is not None:
            self.outbox.emit(
                "referral.visit-documented",
                task,
                at=self.now,
                patient_id=row.patient_id,
                detail={"procedure": procedure.reference, "visits_used": used},
            )
        return flags

    def _flags(self, row: ReferralRow, counted: bool, visit_date: date) -> list[Flag]:
        if not counted:
            return []
        flags = []
        if row.status not in OPEN_STATUSES:
            flags.append(
                Flag("referral-closed", f"The referral is {row.status}; the visit is outside it")
            )
        elif row.status in ("requested", "received"):
            flags.append(
                Flag("referral-not-accepted", "The referral has not been accepted by staff yet")
            )
        on_file = self._procedures(row.service_request_id)
        if row.visits_prescribed is not None and len(on_file) > row.visits_prescribed:
            flags.append(
                Flag(
                    "referral-visits-exceeded",
                    f"Visit {len(on_file)} of {row.visits_prescribed} prescribed",
                )
            )
        if row.expires_on is not None and visit_date > row.expires_on:
            flags.append(
                Flag("referral-expired", f"The referral's period ended on {row.expires_on}")
            )
        return flags

    def _move_task(
        self, task: StoredResource, procedure: StoredResource, counted: bool
    ) -> tuple[StoredResource, str]:
        body = task.resource
        if counted:
            body = add_output(body, procedure.reference, now=self.now)
            if body.get("status") == "accepted":
                body = transition(body, "start", now=self.now)
        else:
            body = remove_output(body, procedure.reference, now=self.now)
        if body == task.resource:
            return task, str(body.get("status"))
        stored, _ = self.store.update(body)
        return stored, str(body.get("status"))

    def _procedures(self, service_request_id: str) -> list[StoredResource]:
        return [
            p
            for p in self.store.search_references(
                "Procedure", "based-on", f"ServiceRequest/{service_request_id}"
            )
            if _counted(p)
        ]

    def _visits_used(self, service_request_id: str) -> int:
        return len(self._procedures(service_request_id))
