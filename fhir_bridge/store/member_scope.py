"""Which records a caller may see, as SQL conditions every read path of the store applies.

A payer sees a patient while the patient has an active Coverage whose ``payor`` is the payer's
Organization and whose period overlaps the dates asked (today unless the request names dates).
An EHR sees the patients it referred: a ServiceRequest whose requester is its Organization, one
of its PractitionerRoles, or a Practitioner holding such a role. The clinic's own systems see
everything. Records in a patient compartment follow their patient; directory resources
(Organization, Practitioner, PractitionerRole) are visible to every caller; AuditEvent only to
admins. Anything not visible is reported exactly as if it did not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, exists, false, not_, or_, select, true
from sqlalchemy.orm import aliased

from fhir_bridge.fhir.search_params import COVERAGE_PERIOD, SEARCH_PARAMS
from fhir_bridge.store.models import ResourceVersion, SearchDate, SearchReference, SearchToken

V = ResourceVersion
DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole"})
ADMIN_ONLY_TYPES = frozenset({"AuditEvent"})
#: types whose records belong to one patient (they have a ``patient`` search parameter)
COMPARTMENT_TYPES = frozenset(
    t for t, params in SEARCH_PARAMS.items() if "patient" in params and t not in ADMIN_ONLY_TYPES
)


@dataclass(frozen=True)
class MemberScope:
    """What one caller may see. ``kind``: all | admin | payer | ehr."""

    kind: str
    organization_id: str | None = None
    #: coverage must overlap [period_low, period_high)
    period_low: datetime | None = None
    period_high: datetime | None = None

    @property
    def unrestricted(self) -> bool:
        """True for the clinic's own systems."""
        return self.kind in ("all", "admin")


EVERYTHING = MemberScope("admin")


def _current(alias: type[ResourceVersion]) -> ColumnElement[bool]:
    return and_(alias.superseded_by.is_(None), alias.deleted.is_(False))


def _payer_members(scope: MemberScope) -> Select[tuple[str | None]]:
    cov = aliased(V)
    payor = aliased(SearchReference)
    patient = aliased(SearchReference)
    status = aliased(SearchToken)
    period = aliased(SearchDate)
    low = scope.period_low or datetime.min
    high = scope.period_high or datetime.max
    with_period = exists().where(period.version_pk == cov.pk, period.param == COVERAGE_PERIOD)
    overlapping = exists().where(
        period.version_pk == cov.pk,
        period.param == COVERAGE_PERIOD,
        period.low < high,
        period.high > low,
    )
    return (
        select(patient.target_id)
        .select_from(cov)
        .join(payor, payor.version_pk == cov.pk)
        .join(patient, patient.version_pk == cov.pk)
        .join(status, status.version_pk == cov.pk)
        .where(
            cov.resource_type == "Coverage",
            _current(cov),
            payor.param == "payor",
            payor.target_type == "Organization",
            payor.target_id == scope.organization_id,
            patient.param == "patient",
            patient.target_type == "Patient",
            status.param == "status",
            status.code == "active",
            # a Coverage without a period has no end we know of
            or_(not_(with_period), overlapping),
        )
    )


def _organization_people(organization_id: str) -> Select[tuple[str | None]]:
    """References (Type/id) to the organization, its PractitionerRoles and their Practitioners."""
    role = aliased(V)
    org = aliased(SearchReference)
    return (
        select(role.resource_id)
        .join(org, org.version_pk == role.pk)
        .where(
            role.resource_type == "PractitionerRole",
            _current(role),
            org.param == "organization",
            org.target_type == "Organization",
            org.target_id == organization_id,
        )
    )


def _ehr_members(scope: MemberScope) -> Select[tuple[str | None]]:
    org_id = scope.organization_id or ""
    sr = aliased(V)
    requester = aliased(SearchReference)
    patient = aliased(SearchReference)
    roles = _organization_people(org_id).subquery()
    role_v = aliased(V)
    practitioner = aliased(SearchReference)
    practitioners = (
        select(practitioner.target_id)
        .join(role_v, role_v.pk == practitioner.version_pk)
        .where(
            role_v.resource_id.in_(select(roles.c.resource_id)),
            role_v.resource_type == "PractitionerRole",
            _current(role_v),
            practitioner.param == "practitioner",
            practitioner.target_type == "Practitioner",
        )
    )
    return (
        select(patient.target_id)
        .select_from(sr)
        .join(requester, requester.version_pk == sr.pk)
        .join(patient, patient.version_pk == sr.pk)
        .where(
            sr.resource_type == "ServiceRequest",
            _current(sr),
            patient.param == "patient",
            patient.target_type == "Patient",
            requester.param == "requester",
            or_(
                and_(requester.target_type == "Organization", requester.target_id == org_id),
                and_(
                    requester.target_type == "PractitionerRole",
                    requester.target_id.in_(select(roles.c.resource_id)),
                ),
                and_(
                    requester.target_type == "Practitioner",
                    requester.target_id.in_(practitioners),
                ),
            ),
        )
    )


def member_ids(scope: MemberScope) -> Select[tuple[str | None]]:
    """The ids of the patients a scoped caller may see, as a sub-select."""
    return _payer_members(scope) if scope.kind == "payer" else _ehr_members(scope)


def visible(
    scope: MemberScope, resource_type: str, version: type[ResourceVersion] = V
) -> ColumnElement[bool]:
    """The condition on ``version`` rows of ``resource_type`` that the caller may see."""
    if resource_type in ADMIN_ONLY_TYPES:
        return true() if scope.kind == "admin" else false()
    if scope.unrestricted or resource_type in DIRECTORY_TYPES:
        return true()
    members = member_ids(scope)
    if resource_type == "Patient":
        return version.resource_id.in_(members)
    if resource_type in COMPARTMENT_TYPES:
        ref = aliased(SearchReference)
        in_compartment = exists().where(
            ref.version_pk == version.pk,
            ref.param == "patient",
            ref.target_type == "Patient",
            ref.target_id.in_(members),
        )
        if resource_type != "Task":
            return in_compartment
        # a client's own requests (CDex Tasks), even those about nobody it may see
        asked = aliased(SearchReference)
        return or_(
            in_compartment,
            exists().where(
                asked.version_pk == version.pk,
                asked.param == "requester",
                asked.target_type == "Organization",
                asked.target_id == (scope.organization_id or ""),
            ),
        )
    return false()
