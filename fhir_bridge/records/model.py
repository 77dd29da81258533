"""The massage-session record as plain frozen dataclasses, after validation (see schemas.py).

Field names follow the contract in the internal API (``POST /api/v1/sessions``). Times are
timezone-aware; numbers that are measurements are Decimals so nothing is rounded on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True)
class CoverageRecord:
    """The patient's insurance: which payer, and the member id on the card."""

    payer_id: str
    member_id: str


@dataclass(frozen=True)
class PatientRecord:
    """The patient as the clinic knows them; only ``mrn`` is required once they are known."""

    mrn: str
    family_name: str | None = None
    given_names: tuple[str, ...] = ()
    birth_date: date | None = None
    sex: str | None = None  # female | male | other | unknown
    coverage: CoverageRecord | None = None


@dataclass(frozen=True)
class TherapistRecord:
    """Who treated: NPI (check digit valid) and a display name."""

    npi: str
    name: str | None = None


@dataclass(frozen=True)
class ReferralRecord:
    """The physician's placer identifier of the prescription this visit fulfils."""

    system: str
    value: str


@dataclass(frozen=True)
class Treatment:
    """One technique applied to one body site for a number of whole minutes (1-120)."""

    technique: str
    minutes: int
    body_site: str | None = None
    laterality: str | None = None  # left | right | bilateral


@dataclass(frozen=True)
class Assessment:
    """One measurement, before (``pre``) or after (``post``) treatment."""

    phase: str  # pre | post
    measure: str
    value: Decimal
    unit: str | None = None
    body_site: str | None = None
    laterality: str | None = None
    at: datetime | None = None  # defaults: session start (pre) / end (post)
    #: item-level answers (ODI, NDI: ``records.item_scores``); ``value`` is their score
    items: tuple[int | None, ...] | None = None


@dataclass(frozen=True)
class GoalRecord:
    """A patient goal, with the measure that shows progress towards it."""

    goal_id: str
    description: str
    measure: str | None = None
    body_site: str | None = None
    laterality: str | None = None
    target: Decimal | None = None
    due: date | None = None


@dataclass(frozen=True)
class Notes:
    """The SOAP narrative."""

    subjective: str | None = None
    objective: str | None = None
    assessment: str | None = None
    plan: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """One visit: assess - treat - reassess."""

    session_id: str
    status: str  # completed | entered-in-error
    patient: PatientRecord
    therapist: TherapistRecord
    started_at: datetime
    ended_at: datetime
    treatments: tuple[Treatment, ...]
    referral: ReferralRecord | None = None
    diagnoses: tuple[str, ...] = ()
    assessments: tuple[Assessment, ...] = ()
    goals: tuple[GoalRecord, ...] = ()
    notes: Notes | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False)
