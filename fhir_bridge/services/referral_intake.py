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

The ServiceRequest is stored as the EHR sent it (contained resources, extensions and all);
the patient resolution lives in the referral row and the Task, not in a rewritten request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from fhir_bridge.fhir.dates import parse_fhir_datetime_range
from fhir_bridge.fhir.npi import NPI_SYSTEM
from fhir_bridge.fhir.outcome import FhirError, Issue
from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.fhir.transaction import iter_references
from fhir_bridge.mapping.prescription import prescription
from fhir_bridge.mapping.referral_changes import referral_changes
from fhir_bridge.mapping.referral_rules import ReferralFacts, check_referral, placer_identifier
from fhir_bridge.mapping.referral_task import new_task
from fhir_bridge.mapping.tables import Code
from fhir_bridge.store.errors import DuplicateIdentifier
from fhir_bridge.store.outbox import OutboxWriter
from fhir_bridge.store.referrals import ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.search import Cursor, run_search

TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
#: ServiceRequest statuses an EHR may move a referral on file to (R4 request-status)
LATER_STATUSES = ("on-hold", "revoked", "completed", "entered-in-error")
#: Task statuses a withdrawn referral's Task leaves for ``cancelled``
_OPEN_TASK = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")
#: longest identifier system or value the store's uniqueness guard holds
CLAIM_MAX = 512
_EVERYTHING = Cursor(snapshot=2**62, key=None, pk=0, forward=True).encode()


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


def is_fulfil_task(resource: Mapping[str, Any]) -> bool:
    """True for a Task asking its owner to fulfil a request (``code = task-code#fulfill``)."""
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and c.get("system") == TASK_CODE_SYSTEM and c.get("code") == "fulfill"
        for c in codings
    )


def focus_reference(task: Mapping[str, Any]) -> str | None:
    """The Task's ``focus.reference`` string, if any."""
    focus = task.get("focus")
    ref = focus.get("reference") if isinstance(focus, dict) else None
    return ref if isinstance(ref, str) else None


def placer_claim(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """(system, value) of a ServiceRequest's placer identifier, when it has a usable one."""
    placer = placer_identifier(dict(resource))
    if placer is None:
        return None
    system, value = str(placer["system"]), str(placer["value"])
    if len(system) > CLAIM_MAX or len(value) > CLAIM_MAX:
        return None
    return system, value


def reroot(issues: Sequence[Issue], root: str) -> list[Issue]:
    """Issues about ``ServiceRequest.x`` re-expressed under ``root`` (e.g. a Bundle entry)."""
    out = []
    for issue in issues:
        exprs = tuple(
            root + e.removeprefix("ServiceRequest") if e.startswith("ServiceRequest") else e
            for e in issue.expression
        )
        out.append(Issue(issue.severity, issue.code, issue.diagnostics, exprs))
    return out


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
        #: resources fetched from physician servers before the transaction, by absolute URL
        self.fetched = dict(fetched or {})
        #: placer identifier -> (patient id, how it was found) of referrals linked to a patient
        self._links: dict[tuple[str, str], tuple[str, str]] = {}

    # ---------------------------------------------------------------- checking
    def check(self, sr: dict[str, Any], root: str = "ServiceRequest") -> list[Issue]:
        """The rules' verdict: FhirError(422) on any error, else the warnings (re-rooted)."""
        requester = self._resolve(sr, _reference(sr.get("requester")))
        practitioner = None
        if requester is not None and requester.get("resourceType") == "PractitionerRole":
            practitioner = self._resolve(requester, _reference(requester.get("practitioner")))
            if practitioner is None:
                practitioner = self._resolve(sr, _reference(requester.get("practitioner")))
        patient_id = self._patient_on_file(sr)
        facts = ReferralFacts(
            today=self.policy.today,
            requester=requester,
            requester_practitioner=practitioner,
            has_coverage=patient_id is not None and self._coverage_on_file(patient_id),
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
        patient_id, match = self._patient(sr, row)
        if task is None and row is not None:
            task = self.store.get("Task", row.task_id)
        if task is None:
            task = self._new_task(stored, patient_id)
        task = self._follow_withdrawal(sr, task)
        claim = placer_claim(sr)
        assert claim is not None  # the rules refuse a referral without one
        details = prescription(sr)
        requester = _reference(sr.get("requester"))
        fresh = ReferralRow(
            service_request_id=stored.resource_id,
            task_id=task.resource_id,
            placer_system=claim[0],
            placer_value=claim[1],
            status=str(task.resource.get("status", "requested")),
            patient_id=patient_id,
            patient_match=match,
            requester_reference=requester if requester and not requester.startswith("#") else None,
            requester_npi=self._requester_npi(sr),
            authored_on=_authored(sr),
            visits_prescribed=details.visits,
            frequency=details.frequency,
            expires_on=details.expires,
            visits_used=row.visits_used if row else 0,
            warnings=[_issue_json(i) for i in warnings],
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
        requester = self._portable_requester(stored.resource)
        if requester is not None:
            body["requester"] = requester
        else:
            body.pop("requester", None)
        claim = (self.policy.task_identifier_system, stored.resource_id)
        try:
            return self.store.create(body, claim_identifiers=[claim])
        except DuplicateIdentifier as exc:
            return exc.existing

    def _portable_requester(self, sr: Mapping[str, Any]) -> dict[str, Any] | None:
        """The requester as another resource may reference it (contained ones by NPI)."""
        requester = sr.get("requester")
        if not isinstance(requester, dict):
            return None
        ref = _reference(requester)
        if ref is not None and not ref.startswith("#"):
            return {"reference": ref}
        npi = self._requester_npi(sr)
        if npi is None:
            return None
        kind = "Practitioner"
        target = self._resolve(dict(sr), ref)
        if target is not None and target.get("resourceType") == "PractitionerRole":
            kind = "PractitionerRole"
        return {"type": kind, "identifier": {"system": NPI_SYSTEM, "value": npi}}

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

    def _resolve(self, holder: Mapping[str, Any], ref: str | None) -> dict[str, Any] | None:
        """The resource a reference names: contained, fetched, or on file (this transaction)."""
        if ref is None:
            return None
        if ref.startswith("#"):
            for res in holder.get("contained") or []:
                if isinstance(res, dict) and res.get("id") == ref[1:]:
                    return res
            return None
        if ref.startswith(("http://", "https://")):
            return self.fetched.get(ref)
        type_, _, rid = ref.partition("/")
        if not type_ or not rid or "/" in rid:
            return None
        found = self.store.get(type_, rid)
        return found.resource if found is not None else None

    def linked(self, sr: dict[str, Any]) -> dict[str, Any]:
        """``sr`` in its patient's compartment: a contained or absolute-URL subject becomes the
        Patient on file it matches (made from the contained Patient when none does), keeping
        its display, and a contained Patient nothing else points at is dropped. The request as
        sent stays in the inbound payload. Unchanged when the subject already names a Patient
        on file, or carries nothing to match on."""
        subject = sr.get("subject")
        ref = _reference(subject)
        if not isinstance(subject, dict) or ref is None:
            return sr
        if not ref.startswith(("#", "http://", "https://")):
            return sr
        on_file = self.existing(sr)
        row = self.referrals.get(on_file.resource_id) if on_file is not None else None
        patient_id, match = self._patient(sr, row)
        if patient_id is None:
            return sr
        claim = placer_claim(sr)
        if claim is not None:
            self._links[claim] = (patient_id, match)
        out = dict(sr)
        kept = {k: v for k, v in subject.items() if k in ("display", "identifier")}
        out["subject"] = {"reference": f"Patient/{patient_id}", **kept}
        if ref.startswith("#"):
            still = {value for _, value in iter_references(out)}
            contained = [
                c
                for c in sr.get("contained") or []
                if not (isinstance(c, dict) and c.get("id") == ref[1:] and ref not in still)
            ]
            if contained:
                out["contained"] = contained
            else:
                out.pop("contained", None)
        return out

    def _patient_on_file(self, sr: Mapping[str, Any]) -> str | None:
        """The Patient id the subject names or whose identifier it carries; no creation."""
        subject = sr.get("subject")
        if not isinstance(subject, dict):
            return None
        ref = _reference(subject)
        if ref is not None and ref.startswith("Patient/"):
            found = self.store.get("Patient", ref.removeprefix("Patient/"))
            return found.resource_id if found is not None else None
        for ident in self._subject_identifiers(sr):
            found = self.store.search_by_identifier("Patient", ident["system"], ident["value"])
            if len(found) == 1:
                return found[0].resource_id
        return None

    def _subject_identifiers(self, sr: Mapping[str, Any]) -> list[dict[str, Any]]:
        subject = sr.get("subject")
        idents: list[Any] = []
        if isinstance(subject, dict):
            idents.append(subject.get("identifier"))
            target = self._resolve(sr, _reference(subject))
            if target is not None and target.get("resourceType") == "Patient":
                idents.extend(target.get("identifier") or [])
        return [
            i
            for i in idents
            if isinstance(i, dict)
            and isinstance(i.get("system"), str)
            and isinstance(i.get("value"), str)
        ]

    def _patient(self, sr: Mapping[str, Any], row: ReferralRow | None) -> tuple[str | None, str]:
        """(patient id, how it was found); creates the Patient when nothing matches."""
        if row is not None and row.patient_id is not None:
            return row.patient_id, row.patient_match
        claim = placer_claim(sr)
        if claim is not None and claim in self._links:
            return self._links[claim]  # linked before it was stored: how it was found then
        subject = sr.get("subject") if isinstance(sr.get("subject"), dict) else {}
        ref = _reference(subject)
        found = self._patient_on_file(sr)
        if found is not None:
            return found, "reference" if ref and ref.startswith("Patient/") else "identifier"
        idents = self._subject_identifiers(sr)
        if not idents:
            return None, "unmatched"
        target = self._resolve(sr, ref)
        if target is None or target.get("resourceType") != "Patient":
            target = {"resourceType": "Patient", "identifier": [idents[0]]}
        body = {k: v for k, v in target.items() if k != "id"}
        first = idents[0]
        try:
            created = self.store.create(body, claim_identifiers=[(first["system"], first["value"])])
        except DuplicateIdentifier as exc:
            return exc.existing.resource_id, "identifier"
        return created.resource_id, "created"

    def _coverage_on_file(self, patient_id: str) -> bool:
        query = replace(
            parse_search("Coverage", [("beneficiary", f"Patient/{patient_id}")]),
            count=1,
            cursor=_EVERYTHING,
        )
        return bool(run_search(self.store.session, query).matches)

    def _requester_npi(self, sr: Mapping[str, Any]) -> str | None:
        requester = sr.get("requester")
        if not isinstance(requester, dict):
            return None
        candidates: list[Any] = [requester.get("identifier")]
        target = self._resolve(sr, _reference(requester))
        if target is not None:
            candidates.extend(target.get("identifier") or [])
            if target.get("resourceType") == "PractitionerRole":
                practitioner = self._resolve(target, _reference(target.get("practitioner")))
                if practitioner is None:
                    practitioner = self._resolve(sr, _reference(target.get("practitioner")))
                if practitioner is not None:
                    candidates.extend(practitioner.get("identifier") or [])
        for ident in candidates:
            if isinstance(ident, dict) and ident.get("system") == NPI_SYSTEM:
                value = ident.get("value")
                if isinstance(value, str):
                    return value
        return None


# --- small pure helpers ---------------------------------------------------------------------


def _reference(node: Any) -> str | None:
    ref = node.get("reference") if isinstance(node, dict) else None
    return ref if isinstance(ref, str) and ref else None


def _authored(sr: Mapping[str, Any]) -> datetime | None:
    raw = sr.get("authoredOn")
    if not isinstance(raw, str):
        return None
    try:
        low, _ = parse_fhir_datetime_range(raw)
    except ValueError:
        return None
    return low


def _issue_json(issue: Issue) -> dict[str, Any]:
    return {
        "severity": issue.severity,
        "code": issue.code,
        "diagnostics": issue.diagnostics,
        "expression": list(issue.expression),
    }


def _changed(old: ReferralRow, new: ReferralRow) -> bool:
    ignore = {"updated_at", "received_at", "pk"}
    return any(
        getattr(old, f) != getattr(new, f)
        for f in ReferralRow.__dataclass_fields__
        if f not in ignore
    )
