"""Filed reports (progress notes, discharge summaries) as a caller may see them.

The DocumentReferences ``services.report_documents`` files, found by search within the
caller's scope, so ``$documentation``, CDex and ``$everything`` show a report exactly where the
caller may see the patient it is about.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.store.member_scope import MemberScope
from fhir_bridge.store.repository import StoredResource
from fhir_bridge.store.search import run_search

LOINC = "http://loinc.org"
#: reports one referral or patient has at most (two kinds per referral)
MAX_REPORTS = 200


def filed_reports(
    session: Session,
    scope: MemberScope,
    clinic_system_base: str,
    *,
    patient_id: str | None = None,
    service_request_id: str | None = None,
    code: str | None = None,
) -> list[StoredResource]:
    """The caller's visible filed reports of a patient or a referral, newest first."""
    if not scope.reads("DocumentReference"):
        return []
    params = [("identifier", f"{clinic_system_base}/report|"), ("_count", str(MAX_REPORTS))]
    if patient_id:
        params.append(("patient", f"Patient/{patient_id}"))
    if service_request_id:
        params.append(("related", f"ServiceRequest/{service_request_id}"))
    if code:
        params.append(("type", f"{LOINC}|{code}"))
    page = run_search(session, parse_search("DocumentReference", params), scope)
    return sorted(page.matches, key=lambda r: str(r.resource.get("date", "")), reverse=True)
