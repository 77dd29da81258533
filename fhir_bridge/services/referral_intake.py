"""Referral intake: a physician's prescription (ServiceRequest, maybe behind a Task) becomes a
referral the clinic can work.

Runs inside the write transaction of the FHIR request that carried the referral (a direct POST
or a transaction/batch Bundle entry), after the Bundle's references were resolved, so that a
rejected referral leaves nothing behind. What it does:

- checks the prescription rules (``mapping.referral_rules``): errors refuse the request with 422
  and an OperationOutcome whose expressions point into the request; warnings are kept on the
  referral and returned with the write;
- keys the referral on its placer identifier (type PLAC): the store claims (system, value) for
  the ServiceRequest, so a retry or a concurrent duplicate finds the first one (an unchanged
  retry writes nothing; a changed one becomes a new version);
- finds the patient: a ``Patient/x`` reference on file, else by identifier (the contained
  Patient's or the identifier-only reference's); failing that a new Patient is created from
  what the EHR sent, and the inbox says so (``patient_match = created``), nothing is guessed;
- tracks the referral with a Task (``code = fulfill``): the EHR's own Task when it sent one,
  else a new one the clinic owns, and writes the inbox row and an outbox event.

The ServiceRequest is stored as the EHR sent it (contained resources, extensions and all),
except that a contained or absolute-URL subject names the Patient matched or made from it
(``linked``), so the prescription is in its patient's compartment; the request as sent stays
in the inbound payload. Resolution (references, patient, requester NPI) is
``services/referral_lookup.py``; recognising referral resources is ``mapping/referral_keys.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from fhir_bridge.fhir.npi import NPI_SYSTEM
from fhir_bridge.fhir.outcome import FhirError, Issue
from fhir_bridge.mapping.prescription import prescription
from fhir_bridge.mapping.referral_changes import referral_changes
from fhir_bridge.mapping.referral_keys import CLAIM_MAX as CLAIM_MAX
from fhir_bridge.mapping.referral_keys import TASK_CODE_SYSTEM as TASK_CODE_SYSTEM
from fhir_bridge.mapping.referral_keys import authored, issue_json, reference, reroot
from fhir_bridge.mapping.referral_keys import focus_reference as focus_reference
from fhir_bridge.mapping.referral_keys import is_fulfil_task as is_fulfil_task
from fhir_bridge.mapping.referral_keys import placer_claim as placer_claim
from fhir_bridge.mapping.referral_rules import ReferralFacts, check_referral, placer_identifier
from fhir_bridge.mapping.referral_task import new_task
from fhir_bridge.mapping.tables import Code
from fhir_bridge.services.referral_lookup import ReferralLookup
from fhir_bridge.store.errors import DuplicateIdentifier
from fhir_bridge.store.outbox import OutboxWriter
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore, StoredResource

#: ServiceRequest statuses an EHR may move a referral on file to (R4 request-status)
LATER_STATUSES = ("on-hold", "revoked", "completed", "entered-in-error")
#: Task statuses a withdrawn referral's Task leaves for ``cancelled``
_OPEN_TASK = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")


@dataclass(frozen=True)
class IntakePolicy:
    """What intake needs from configuration: the value set, the clinic, the date."""

    services: tuple[Code, ...]
    clinic_name: str
    clinic_npi: str
    clinic_system_base: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))
    #: id of the Organization whose EHR is sending (None: the clinic's own systems, polling)
    sender_organization: str | None = None
    #: the client sending (named in the referral's change list); None: the clinic itself
    sender_client: str | None = None

    @property
    def task_identifier_system(self) -> str:
        """System of the filler (FILL) identifiers the clinic gives the Tasks it creates."""
        return f"{self.clinic_system_base}/referral-task"

    @property
    def today(self) -> date:
        """The date the 90-day rule counts from."""
        return self.now.date()


@dataclass(frozen=True)
class Received:
    """One referral taken in: its row, the tracking Task, and the warnings it produced."""

    referral: ReferralRow
    task: StoredResource
    warnings: tuple[Issue, ...]


# --- recognising referral resources --------------------------------------------------------------


# --- the intake itself ---------------------------------------------------------------------------


class ReferralIntake:
    """Takes referrals in within one unit of work (the caller's transaction)."""

    def __init__(
        self,
        store: ResourceStore,
        policy: IntakePolicy,
        *,
        fetched: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.referrals = ReferralStore(store.session)
        self.outbox = OutboxWriter(store.session)
        self.lookup = ReferralLookup(store, fetched)

    @property
    def fetched(self) -> dict[str, dict[str, Any]]:
        """Resources fetched from physician servers before the transaction, by absolute URL."""
        return self.lookup.fetched

    # ---------------------------------------------------------------- checking
    def check(self, sr: dict[str, Any], root: str = "ServiceRequest") -> list[Issue]:
        """The rules' verdict: FhirError(422) on any error, else the warnings (re-rooted)."""
        requester = self.lookup.resolve(sr, reference(sr.get("requester")))
        practitioner = None
        if requester is not None and requester.get("resourceType") == "PractitionerRole":
            practitioner = self.lookup.resolve(requester, reference(requester.get("practitioner")))
            if practitioner is None:
                practitioner = self.lookup.resolve(sr, reference(requester.get("practitioner")))
        patient_id = self.lookup.patient_on_file(sr)
        facts = ReferralFacts(
            today=self.policy.today,
            requester=requester,
            requester_practitioner=practitioner,
            has_coverage=patient_id is not None and self.lookup.coverage_on_file(patient_id),
        )
        issues = reroot(check_referral(sr, facts, self.policy.services), root)
        if sr.get("status") in LATER_STATUSES and self.existing(sr) is not None:
            # the EHR puts a referral on hold, revokes or closes it: a change, not a new order
            issues = [i for i in issues if i.expression != (f"{root}.status",)]
        if placer_identifier(sr) is not None and placer_claim(sr) is None:
            issues.append(
                Issue(
                    "error",
                    "too-long",
                    f"The placer identifier's system and value may be at most {CLAIM_MAX} "
                    "characters each",
                    (f"{root}.identifier",),
                )
            )
        if any(i.severity in ("error", "fatal") for i in issues):
            raise FhirError(422, issues)
        return issues

    # ---------------------------------------------------------------- storing
    def existing(self, sr: Mapping[str, Any]) -> StoredResource | None:
        """The ServiceRequest on file with the same placer identifier."""
        claim = placer_claim(sr)
        if claim is None:
            return None
        return self.store.find_by_identifier("ServiceRequest", *claim)

    def store_service_request(self, sr: dict[str, Any]) -> tuple[StoredResource, bool]:
        """Create the referral's ServiceRequest, or make ``sr`` the new version of the one on
        file with its placer identifier (unchanged: nothing written). (stored, created)."""
        claim = placer_claim(sr)
        claims = [claim] if claim else []
        on_file = self.existing(sr)
        if on_file is not None:
            stored, _ = self.store.update(
                {**sr, "id": on_file.resource_id}, claim_identifiers=claims
            )
            return stored, False
        body = {k: v for k, v in sr.items() if k != "id"}
        return self.store.create(body, claim_identifiers=claims), True

    def register(
        self,
        stored: StoredResource,
        *,
        warnings: Sequence[Issue] = (),
        task: StoredResource | None = None,
        previous: Mapping[str, Any] | None = None,
    ) -> Received:
        """Write the inbox row, the tracking Task (when none yet) and the outbox event.

        ``previous``: the version on file before this write (a re-send); what changed from it
        is added to the referral's change list, with who sent it.
        """
        sr = stored.resource
        now = self.policy.now
        row = self.referrals.get(stored.resource_id, for_update=True)
        patient_id, match = self.lookup.patient(sr, row)
        if task is None and row is not None:
            task = self.store.get("Task", row.task_id)
        if task is None:
            task = self._new_task(stored, patient_id)
        task = self._follow_withdrawal(sr, task)
        claim = placer_claim(sr)
        assert claim is not None  # the rules refuse a referral without one
        details = prescription(sr)
        requester = reference(sr.get("requester"))
        fresh = ReferralRow(
            service_request_id=stored.resource_id,
            task_id=task.resource_id,
            placer_system=claim[0],
            placer_value=claim[1],
            status=str(task.resource.get("status", "requested")),
            patient_id=patient_id,
            patient_match=match,
            requester_reference=requester if requester and not requester.startswith("#") else None,
            requester_npi=self.lookup.requester_npi(sr),
            authored_on=authored(sr),
            visits_prescribed=details.visits,
            frequency=details.frequency,
            expires_on=details.expires,
            visits_used=row.visits_used if row else 0,
            warnings=[issue_json(i) for i in warnings],
            received_at=row.received_at if row else now,
            updated_at=now,
            sender_organization=row.sender_organization if row else self.policy.sender_organization,
            changes=self._changes(row, previous, stored),
        )
        if row is None or _changed(row, fresh):
            self.referrals.save(fresh)
            event = "referral.received" if row is None else "referral.updated"
            self.outbox.emit(
                event,
                stored,
                at=now,
                patient_id=patient_id,
                detail={"task": f"Task/{task.resource_id}", "requester": fresh.requester_reference},
            )
        return Received(
            referral=self.referrals.get(stored.resource_id) or fresh,
            task=task,
            warnings=tuple(warnings),
        )

    def _changes(
        self, row: ReferralRow | None, previous: Mapping[str, Any] | None, stored: StoredResource
    ) -> list[dict[str, Any]]:
        """The referral's change list, with what ``stored`` changed from ``previous``."""
        changes = list(row.changes) if row is not None else []
        lines = referral_changes(dict(previous), stored.resource) if previous is not None else []
        if lines:
            changes.append(
                {
                    "at": self.policy.now.isoformat(timespec="seconds") + "Z",
                    "by": self.policy.sender_client or "clinic",
                    "version": stored.version_id,
                    "changes": lines,
                }
            )
        return changes

    def tracker(self, sr: StoredResource) -> StoredResource | None:
        """The Task tracking the referral of ``sr``, if the referral is on file."""
        row = self.referrals.get(sr.resource_id)
        return self.store.get("Task", row.task_id) if row is not None else None

    def supersedable(self, task: StoredResource | None) -> bool:
        """True when no Task tracks yet, or ours does and nobody has acted on it: an EHR's own
        fulfil Task then takes over. Otherwise the tracker stays (the first Task wins)."""
        return task is None or (
            self.is_ours(task.resource) and task.resource.get("status") == "requested"
        )

    def track(
        self, sr: StoredResource, task: StoredResource, warnings: Sequence[Issue] = ()
    ) -> Received:
        """Make ``task`` (an EHR's fulfil Task) the tracker of the referral of ``sr``."""
        row = self.referrals.get(sr.resource_id, for_update=True)
        if row is None:
            return self.register(sr, warnings=warnings, task=task)
        previous = self.store.get("Task", row.task_id)
        if previous is not None and previous.resource_id != task.resource_id:
            self.store.update(
                {
                    **previous.resource,
                    "status": "cancelled",
                    "statusReason": {"text": "Superseded by the referring EHR's own Task"},
                }
            )
        updated = replace(
            row,
            task_id=task.resource_id,
            status=str(task.resource.get("status", row.status)),
            updated_at=self.policy.now,
        )
        self.referrals.save(updated)
        return Received(referral=updated, task=task, warnings=tuple(warnings))

    def task_changed(self, task: StoredResource) -> None:
        """An EHR updated a Task (e.g. cancelled it): the inbox follows its status."""
        row = self.referrals.by_task(task.resource_id)
        status = task.resource.get("status")
        if row is not None and isinstance(status, str) and status != row.status:
            self.referrals.save(replace(row, status=status, updated_at=self.policy.now))

    def service_request_for(self, reference: str) -> StoredResource | None:
        """The referral ServiceRequest a Task's focus names: on file, or fetched and stored."""
        if reference.startswith(("http://", "https://")):
            fetched = self.fetched.get(reference)
            claim = placer_claim(fetched) if fetched else None
            return self.store.find_by_identifier("ServiceRequest", *claim) if claim else None
        type_, _, rid = reference.partition("/")
        if type_ != "ServiceRequest" or not rid:
            return None
        return self.store.get("ServiceRequest", rid)

    def is_ours(self, task: Mapping[str, Any]) -> bool:
        """True for a Task the bridge created (it carries our FILL identifier)."""
        return any(
            isinstance(i, dict) and i.get("system") == self.policy.task_identifier_system
            for i in task.get("identifier") or []
        )

    # ---------------------------------------------------------------- internals
    def _follow_withdrawal(self, sr: Mapping[str, Any], task: StoredResource) -> StoredResource:
        """A revoked (or entered-in-error) ServiceRequest cancels its open Task."""
        if sr.get("status") not in ("revoked", "entered-in-error"):
            return task
        if task.resource.get("status") not in _OPEN_TASK:
            return task
        cancelled = {
            **task.resource,
            "status": "cancelled",
            "statusReason": {"text": "The referring physician withdrew the ServiceRequest"},
        }
        return self.store.update(cancelled)[0]

    def _new_task(self, stored: StoredResource, patient_id: str | None) -> StoredResource:
        owner = self._clinic_reference()
        body = new_task(
            service_request_id=stored.resource_id,
            service_request=stored.resource,
            owner=owner,
            task_identifier={
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "FILL",
                        }
                    ]
                },
                "system": self.policy.task_identifier_system,
                "value": stored.resource_id,
            },
            now=self.policy.now,
        )
        if patient_id is not None:
            body["for"] = {"reference": f"Patient/{patient_id}"}
        requester = self.lookup.portable_requester(stored.resource)
        if requester is not None:
            body["requester"] = requester
        else:
            body.pop("requester", None)
        claim = (self.policy.task_identifier_system, stored.resource_id)
        try:
            return self.store.create(body, claim_identifiers=[claim])
        except DuplicateIdentifier as exc:
            return exc.existing

    def _clinic_reference(self) -> dict[str, Any]:
        found = self.store.search_by_identifier("Organization", NPI_SYSTEM, self.policy.clinic_npi)
        if found:
            return {
                "reference": f"Organization/{found[0].resource_id}",
                "display": self.policy.clinic_name,
            }
        return {
            "type": "Organization",
            "identifier": {"system": NPI_SYSTEM, "value": self.policy.clinic_npi},
            "display": self.policy.clinic_name,
        }

    def linked(self, sr: dict[str, Any]) -> dict[str, Any]:
        """``sr`` in its patient's compartment (see ``ReferralLookup.link_subject``)."""
        on_file = self.existing(sr)
        row = self.referrals.get(on_file.resource_id) if on_file is not None else None
        return self.lookup.link_subject(sr, row)


# --- small pure helpers ---------------------------------------------------------------------


def _changed(old: ReferralRow, new: ReferralRow) -> bool:
    ignore = {"updated_at", "received_at", "pk"}
    return any(
        getattr(old, f) != getattr(new, f)
        for f in ReferralRow.__dataclass_fields__
        if f not in ignore
    )
