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
from functools import lru_cache
from typing import Any

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


def _payer_member(scope: MemberScope, patient_id: Any) -> ColumnElement[bool]:
    """Correlated: an active Coverage of ``patient_id`` names the payer for the dates asked.

    Evaluated per candidate row through the index on (type, param, target id), so a search
    narrowed to one patient costs a few index probes, however many members the payer has.
    """
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
        select(patient.pk)
        .join(cov, cov.pk == patient.version_pk)
        .join(payor, payor.version_pk == cov.pk)
        .join(status, status.version_pk == cov.pk)
        .where(
            patient.resource_type == "Coverage",
            patient.param == "patient",
            patient.target_id == patient_id,
            patient.target_type == "Patient",
            _current(cov),
            payor.param == "payor",
            payor.target_type == "Organization",
            payor.target_id == scope.organization_id,
            status.param == "status",
            status.code == "active",
            # a Coverage without a period has no end we know of
            or_(not_(with_period), overlapping),
        )
        .exists()
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


def _ehr_member(scope: MemberScope, patient_id: Any) -> ColumnElement[bool]:
    """Correlated: a current ServiceRequest for ``patient_id`` was made by the EHR's people."""
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
        select(patient.pk)
        .join(sr, sr.pk == patient.version_pk)
        .join(requester, requester.version_pk == sr.pk)
        .where(
            patient.resource_type == "ServiceRequest",
            patient.param == "patient",
            patient.target_id == patient_id,
            patient.target_type == "Patient",
            _current(sr),
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
        .exists()
    )


def is_member(scope: MemberScope, patient_id: Any) -> ColumnElement[bool]:
    """Correlated condition: the patient ``patient_id`` (a column) is the scoped caller's."""
    if scope.kind == "payer":
        return _payer_member(scope, patient_id)
    if scope.kind == "ehr":
        return _ehr_member(scope, patient_id)
    return false()


@lru_cache(maxsize=4096)
def visible(
    scope: MemberScope, resource_type: str, version: type[ResourceVersion] = V
) -> ColumnElement[bool]:
    """The condition on ``version`` rows of ``resource_type`` that the caller may see.

    Cached per scope and type (scopes are values; a payer's dates change once a day): the
    expression takes ~2 ms to build and 0.1 ms to run, and SQL expressions are immutable.
    """
    if resource_type in ADMIN_ONLY_TYPES:
        return true() if scope.kind == "admin" else false()
    if scope.unrestricted or resource_type in DIRECTORY_TYPES:
        return true()
    if resource_type == "Patient":
        return is_member(scope, version.resource_id)
    if resource_type in COMPARTMENT_TYPES:
        ref = aliased(SearchReference)
        in_compartment = exists().where(
            ref.version_pk == version.pk,
            ref.param == "patient",
            ref.target_type == "Patient",
            is_member(scope, ref.target_id),
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
