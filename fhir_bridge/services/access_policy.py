"""The access policy: the one place that decides what a caller may read and write.

Reads. ``read_scope(principal)`` is everything the store needs to keep a caller inside what it
may see: its kind (clinic systems and admins see every patient; payers their members; EHRs the
patients of referrals the clinic accepted), its Organization, and the resource types its SMART
scopes let it read. Every read path (read, vread, history, search with ``_include`` and
``_revinclude``, batch and transaction GET entries, ``$everything``, ``$documentation``, CDex
answers) applies that scope through ``store.member_scope.visible``, so a resource the caller
may not see is absent, exactly as if it did not exist (404 on direct access, never 403).

Writes. ``WriteAccess`` answers may-write for one caller: the clinic's systems write anything;
payers write nothing but CDex data requests; an EHR writes only what it owns (referrals whose
requester is its Organization, one of its PractitionerRoles, or a practitioner whose NPI it is
registered for, and Tasks about those referrals). Patient, Organization, Practitioner,
PractitionerRole, Coverage and Condition data reach the bridge from an EHR only inside a
referral Bundle, as POST entries that are matched on their identifiers (an existing resource
is kept as it is) or created; an EHR never updates them. A refusal is 403 with an
OperationOutcome naming the element.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from fhir_bridge.fhir.outcome import FhirError, Issue
from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.mapping.referral_keys import reference
from fhir_bridge.security.principal import Principal
from fhir_bridge.services.authorization import utcnow
from fhir_bridge.services.referral_lookup import ReferralLookup
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.clients import ClientStore
from fhir_bridge.store.db import read_session
from fhir_bridge.store.member_scope import COMPARTMENT_TYPES as COMPARTMENT_TYPES
from fhir_bridge.store.member_scope import MemberScope
from fhir_bridge.store.repository import ResourceStore
from fhir_bridge.store.search import run_search

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
#: roles that see every patient and write anything (the clinic's own systems)
CLINIC_ROLES = frozenset({"clinic", "admin"})
#: what an EHR sends only inside a referral Bundle, as POST entries (matched or created)
DEMOGRAPHIC_TYPES = frozenset(
    {"Patient", "Organization", "Practitioner", "PractitionerRole", "Coverage", "Condition"}
)
#: types the FHIR API serves (the ones a scope can name usefully)
SERVED_TYPES = frozenset(SEARCH_PARAMS) | {"CodeSystem", "ConceptMap"}


# --- reads -----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _readable(principal: Principal) -> frozenset[str] | None:
    """Types the token may read or search; None when it may read every type."""
    if any(s.resource_type == "*" and s.permissions & {"r", "s"} for s in principal.scopes):
        return None
    return frozenset(
        t for t in SERVED_TYPES if principal.may(t, "read") or principal.may(t, "search")
    )


@lru_cache(maxsize=256)
def _searchable(principal: Principal) -> frozenset[str] | None:
    """Types the token may search; None when it may search every type."""
    if any(s.resource_type == "*" and "s" in s.permissions for s in principal.scopes):
        return None
    return frozenset(t for t in SERVED_TYPES if principal.may(t, "search"))


def may_read_type(principal: Principal, resource_type: str) -> bool:
    """May the caller's token read or search ``resource_type`` (AuditEvent: admins only)?"""
    return read_scope(principal).reads(resource_type)


def organization_id(principal: Principal) -> str | None:
    """The id of the Organization an ehr or payer client acts for."""
    org = principal.organization or ""
    return org.split("/", 1)[1] if org.startswith("Organization/") else None


def read_scope(principal: Principal) -> MemberScope:
    """What the caller may see. A payer's membership is judged today: request parameters
    (``$everything?start=``, search dates) narrow what it gets, never widen it."""
    types = {"readable": _readable(principal), "searchable": _searchable(principal)}
    if principal.role == "admin":
        return MemberScope("admin", **types)
    if principal.role == "clinic":
        return MemberScope("all", **types)
    org_id = organization_id(principal)
    if principal.role == "payer":
        today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        return MemberScope("payer", org_id, today, today + timedelta(days=1), **types)
    if principal.role == "ehr":
        return MemberScope("ehr", org_id, **types)
    return MemberScope("none", readable=frozenset())


def may_use_clinic_api(principal: Principal) -> bool:
    """The clinic's own API (``/api/v1``) is for the clinic's systems and admins only."""
    return principal.role in CLINIC_ROLES


# --- writes ----------------------------------------------------------------------------------


def forbidden(diagnostics: str, expression: str) -> FhirError:
    """The 403 every refused write gets."""
    return FhirError(403, Issue("error", "forbidden", diagnostics, (expression,)))


def _npis(resource: Mapping[str, Any] | None) -> set[str]:
    if not isinstance(resource, Mapping):
        return set()
    return {
        str(i.get("value"))
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == NPI_SYSTEM and i.get("value")
    }


@dataclass(frozen=True)
class WriteAccess:
    """What one caller may write (see the module docstring); ``unrestricted`` for the clinic."""

    principal: Principal
    #: NPIs the client is registered to speak for (ehr clients)
    npis: frozenset[str] = frozenset()

    @property
    def unrestricted(self) -> bool:
        """The clinic's own systems write anything."""
        return self.principal.role in CLINIC_ROLES

    @property
    def org_id(self) -> str | None:
        """The Organization the caller acts for."""
        return organization_id(self.principal)

    def check_payer(self, is_data_request: bool) -> None:
        """Payers write nothing but CDex data requests: referrals come from physicians."""
        if self.principal.role == "payer" and not is_data_request:
            raise forbidden(
                "A payer may only POST Da Vinci CDex data-request Tasks",
                "http.Authorization",
            )

    def check_entry(
        self, method: str, resource_type: str, *, carries_referral: bool, expression: str
    ) -> None:
        """May the caller write this entry at all (before anything is resolved)?"""
        if self.unrestricted:
            return
        if self.principal.role != "ehr":
            raise forbidden(f"This client may not write {resource_type}", expression)
        if resource_type not in DEMOGRAPHIC_TYPES:
            return
        if method != "POST":
            raise forbidden(
                f"An EHR may not update {resource_type}: send it as a POST entry of a referral "
                "Bundle, where it is matched on its identifiers or created",
                expression,
            )
        if not carries_referral:
            raise forbidden(
                f"An EHR sends {resource_type} only inside a referral Bundle", expression
            )

    def check_on_file(self, store: ResourceStore, resource: Mapping[str, Any], expr: str) -> None:
        """May the caller replace this resource on file (a referral it sent, its Task)?"""
        if self.unrestricted:
            return
        rtype = resource.get("resourceType")
        if rtype == "ServiceRequest" and not self.owns_referral(store, resource):
            raise forbidden("This referral was sent by another organization", expr)
        if rtype == "Task" and not self._owns_task(store, resource):
            raise forbidden("This Task is about another organization's referral", expr)

    def check_written(
        self,
        store: ResourceStore,
        resource: Mapping[str, Any],
        expression: str,
        *,
        focus: Callable[[str], Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Does what the caller wrote stay its own? Checked inside the write's transaction, with
        references already resolved, so a refusal rolls everything back."""
        if self.unrestricted:
            return
        rtype = resource.get("resourceType")
        if rtype == "ServiceRequest" and not self.owns_referral(store, resource):
            raise forbidden(
                "The requester must be this client's Organization, one of its "
                "PractitionerRoles, or a practitioner whose NPI the client is registered for",
                f"{expression}.requester",
            )
        if rtype == "Task" and not self._owns_task(store, resource, focus):
            raise forbidden(
                "A Task's focus must be a referral this client sent", f"{expression}.focus"
            )
        if rtype == "PractitionerRole":
            self._check_role(store, resource, expression)

    def _check_role(self, store: ResourceStore, role: Mapping[str, Any], expression: str) -> None:
        """A role in the caller's Organization may only name a practitioner it speaks for."""
        if reference(role.get("organization")) != f"Organization/{self.org_id}":
            return
        practitioner = self._resolve(store, role, reference(role.get("practitioner")))
        if not (_npis(practitioner) & self.npis):
            raise forbidden(
                "A PractitionerRole in this client's Organization must name a practitioner "
                "whose NPI the client is registered for",
                f"{expression}.practitioner",
            )

    def owns_referral(self, store: ResourceStore, sr: Mapping[str, Any]) -> bool:
        """Is the ServiceRequest's requester this client's Organization or people?"""
        requester = sr.get("requester")
        if not isinstance(requester, dict):
            return False
        ident = requester.get("identifier")
        if (
            isinstance(ident, dict)
            and ident.get("system") == NPI_SYSTEM
            and str(ident.get("value")) in self.npis
        ):
            return True
        ref = reference(requester)
        if ref is None:
            return False
        if ref == f"Organization/{self.org_id}" and self.org_id:
            return True
        target = self._resolve(store, sr, ref)
        if target is None:
            return False
        if target.get("resourceType") == "PractitionerRole":
            if self.org_id and reference(target.get("organization")) == (
                f"Organization/{self.org_id}"
            ):
                return True
            target = self._resolve(store, target, reference(target.get("practitioner")))
        if target is None or target.get("resourceType") != "Practitioner":
            return False
        if _npis(target) & self.npis:
            return True
        return bool(ref.startswith("Practitioner/") and self._has_role_here(store, ref))

    def _owns_task(
        self,
        store: ResourceStore,
        task: Mapping[str, Any],
        focus: Callable[[str], Mapping[str, Any] | None] | None = None,
    ) -> bool:
        ref = reference(task.get("focus"))
        if ref is None:
            return False
        sr = focus(ref) if focus is not None else None
        if sr is None:
            sr = self._resolve(store, task, ref)
        return sr is not None and self.owns_referral(store, sr)

    def _has_role_here(self, store: ResourceStore, practitioner_ref: str) -> bool:
        query = parse_search(
            "PractitionerRole",
            [("practitioner", practitioner_ref), ("organization", f"Organization/{self.org_id}")],
        )
        return bool(self.org_id) and bool(run_search(store.session, query).matches)

    @staticmethod
    def _resolve(
        store: ResourceStore, holder: Mapping[str, Any], ref: str | None
    ) -> dict[str, Any] | None:
        """A contained resource or one on file (this transaction); None for anything else."""
        return ReferralLookup(store).resolve(holder, ref)


def write_access(runtime: Runtime, principal: Principal) -> WriteAccess:
    """The caller's write rights; an ehr client's NPIs come from its registration."""
    if principal.role != "ehr":
        return WriteAccess(principal)
    with read_session(runtime.sessions) as session:
        row = ClientStore(session).get(principal.client_id)
    return WriteAccess(principal, frozenset(row.npis) if row else frozenset())
