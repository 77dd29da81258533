"""What the mapping needs to know besides the record: identities resolved by the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_bridge.fhir.ids import stable_id
from fhir_bridge.fhir.npi import NPI_SYSTEM
from fhir_bridge.records.model import SessionRecord


@dataclass(frozen=True)
class ClinicIdentity:
    """The clinic's identifier systems (from settings)."""

    system_base: str
    payer_id_system: str

    @property
    def mrn_system(self) -> str:
        """Identifier system of the clinic's medical record numbers."""
        return f"{self.system_base}/mrn"

    @property
    def session_system(self) -> str:
        """Identifier system of resources generated from sessions."""
        return f"{self.system_base}/session"

    @property
    def goal_system(self) -> str:
        """Identifier system of patient goals."""
        return f"{self.system_base}/goal"

    def member_id_system(self, payer_id: str) -> str:
        """Identifier system of a payer's member ids, as the clinic records them."""
        return f"{self.system_base}/member-id/{payer_id}"


@dataclass(frozen=True)
class ReferralContext:
    """The referral (ServiceRequest) a session is based on, as stored."""

    service_request_id: str
    reason_code: tuple[dict[str, Any], ...] = ()
    reason_reference: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class SessionContext:
    """Ids of the resources a session links to, and what already exists of them."""

    clinic: ClinicIdentity
    patient_id: str
    practitioner_id: str
    existing_patient: dict[str, Any] | None = None
    existing_practitioner: dict[str, Any] | None = None
    payer_organization_id: str | None = None
    existing_payer_organization: dict[str, Any] | None = None
    coverage_id: str | None = None
    existing_coverage: dict[str, Any] | None = None
    referral: ReferralContext | None = None
    #: startDate of the patient's goals already on file, by the clinic's goal id
    goal_start_dates: dict[str, str] = field(default_factory=dict)


def new_ids(record: SessionRecord, clinic: ClinicIdentity) -> dict[str, str | None]:
    """Ids the linked resources get when none is on file yet, derived from their identifiers."""
    coverage = record.patient.coverage
    return {
        "patient_id": stable_id("Patient", clinic.mrn_system, record.patient.mrn),
        "practitioner_id": stable_id("Practitioner", NPI_SYSTEM, record.therapist.npi),
        "payer_organization_id": stable_id(
            "Organization", clinic.payer_id_system, coverage.payer_id
        )
        if coverage
        else None,
        "coverage_id": stable_id(
            "Coverage", clinic.member_id_system(coverage.payer_id), coverage.member_id
        )
        if coverage
        else None,
    }


def fresh_context(record: SessionRecord, clinic: ClinicIdentity) -> SessionContext:
    """The context of a record whose patient, therapist, payer and referral are all new."""
    ids = new_ids(record, clinic)
    return SessionContext(
        clinic=clinic,
        patient_id=str(ids["patient_id"]),
        practitioner_id=str(ids["practitioner_id"]),
        payer_organization_id=ids["payer_organization_id"],
        coverage_id=ids["coverage_id"],
    )
