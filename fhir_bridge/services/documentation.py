"""The documentation a payer reviews: ``Patient/$everything`` and ``ServiceRequest/$documentation``.

``$documentation`` carries the referral's filed reports (progress notes, discharge summary:
``services.report_lookup``); ``$everything`` has them as records of the patient's compartment.
Both read within the caller's scope (what is outside it is absent, as if it did not exist) and
within the resource types the caller's token may read.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.mapping.clinical import PERTAINS_TO_GOAL
from fhir_bridge.mapping.outcome_summary import outcome_changes
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.services.report_lookup import filed_reports
from fhir_bridge.services.resources import check_visible
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.errors import ResourceGone, ResourceNotFound
from fhir_bridge.store.everything import EverythingQuery as EverythingQuery
from fhir_bridge.store.everything import everything
from fhir_bridge.store.member_scope import MemberScope
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.search import SearchPage, run_search

#: visits one package holds; more is reported as truncated
MAX_VISITS = 1000


def patient_everything(runtime: Runtime, query: EverythingQuery, scope: MemberScope) -> SearchPage:
    """One page of the patient's compartment; ResourceNotFound outside the scope."""
    with read_session(runtime.sessions) as session:
        check_visible(session, scope, "Patient", query.patient_id)
        return everything(session, query, scope)


@dataclass
class DocumentationPackage:
    """The prescription first, then what supports it, then the outcome summary."""

    service_request: StoredResource
    supporting: list[StoredResource] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def _search(
    session: Session, scope: MemberScope, rtype: str, params: list[tuple[str, str]]
) -> tuple[list[StoredResource], bool]:
    query = parse_search(rtype, [*params, ("_count", str(MAX_VISITS))])
    page = run_search(session, query, scope)
    return page.matches, page.next_cursor is not None


def _references(resources: list[dict[str, Any]], path: str, rtype: str) -> set[str]:
    out = set()
    for res in resources:
        for ref in res.get(path, []) or []:
            value = ref.get("reference", "") if isinstance(ref, dict) else ""
            if value.startswith(f"{rtype}/"):
                out.add(value.split("/", 1)[1])
    return out


def _goal_ids(observations: list[dict[str, Any]]) -> set[str]:
    ids = set()
    for obs in observations:
        for ext in obs.get("extension", []):
            ref = ext.get("valueReference", {}).get("reference", "")
            if ext.get("url") == PERTAINS_TO_GOAL and ref.startswith("Goal/"):
                ids.add(ref.split("/", 1)[1])
    return ids


def documentation(
    runtime: Runtime,
    service_request_id: str,
    scope: MemberScope,
    readable: Collection[str],
    tables: MappingTables | None = None,
) -> DocumentationPackage:
    """Everything behind one prescription; ResourceNotFound when outside the scope."""
    with read_session(runtime.sessions) as session:
        check_visible(session, scope, "ServiceRequest", service_request_id)
        store = ResourceStore(session)
        sr = store.read("ServiceRequest", service_request_id)
        package = DocumentationPackage(sr)
        body = sr.resource
        patient_ref = body.get("subject", {}).get("reference", "")
        based_on = [("based-on", f"ServiceRequest/{service_request_id}")]
        found: list[StoredResource] = []
        if "Procedure" in readable:
            procedures, more = _search(session, scope, "Procedure", based_on)
            found += procedures
            package.truncated |= more
        observations: list[StoredResource] = []
        if "Observation" in readable:
            observations, more = _search(session, scope, "Observation", based_on)
            found += observations
            package.truncated |= more
        wanted = {
            "Patient": {patient_ref.split("/", 1)[1]}
            if patient_ref.startswith("Patient/")
            else set(),
            "Condition": _references([body], "reasonReference", "Condition"),
            "Coverage": _references([body], "insurance", "Coverage"),
            "Goal": _goal_ids([o.resource for o in observations]),
        }
        if "DocumentReference" in readable:  # the filed progress reports and summary
            found += filed_reports(
                session,
                scope,
                runtime.settings.clinic_system_base,
                service_request_id=service_request_id,
            )
        if "Coverage" in readable and patient_ref.startswith("Patient/"):
            coverages, _ = _search(session, scope, "Coverage", [("patient", patient_ref)])
            found += coverages
        for rtype, ids in wanted.items():
            if rtype not in readable:
                continue
            for rid in sorted(ids):
                try:
                    check_visible(session, scope, rtype, rid)
                    found.append(store.read(rtype, rid))
                except (ResourceNotFound, ResourceGone):
                    continue  # absent, deleted or out of scope: not in the package
        unique: dict[tuple[str, str], StoredResource] = {}
        for res in found:
            unique.setdefault((res.resource_type, res.resource_id), res)
        package.supporting = list(unique.values())
        package.summary = outcome_changes([o.resource for o in observations], tables)
        return package
