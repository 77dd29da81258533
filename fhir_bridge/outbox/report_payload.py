"""The Bundle a ``report.generated`` delivery sends: the report as it is now, and its patient.

Read in the worker's session (``outbox.payload`` calls it per event); the pure
builder is ``mapping.report_bundle``. Like the visit Bundles, the resources are read as they
are now: a delivery built after a regeneration carries the later version, which the partner's
conditional update takes as the next version of the same resource.
"""

from __future__ import annotations

from typing import Any

from fhir_bridge.mapping.delivery_bundle import relative_references
from fhir_bridge.mapping.report_bundle import report_bundle
from fhir_bridge.store.models import OutboxEvent
from fhir_bridge.store.repository import ResourceStore


class ReportGone(LookupError):
    """The report or its patient is no longer on file."""


def report_payload(
    store: ResourceStore, event: OutboxEvent, clinic_system_base: str
) -> dict[str, Any]:
    """The transaction Bundle for one ``report.generated`` event.

    :raise ReportGone: the DocumentReference or its patient is gone (a ``LookupError``, as
        ``delivery_payload.PayloadSourceGone`` is).
    """
    document = store.get(event.resource_type, event.resource_id)
    if document is None or document.deleted:
        raise ReportGone(f"the report: {event.resource_type}/{event.resource_id} is gone")
    subject = str((document.resource.get("subject") or {}).get("reference", ""))
    resource_type, _, resource_id = subject.partition("/")
    patient = store.get(resource_type, resource_id) if resource_type == "Patient" else None
    if patient is None or patient.deleted:
        raise ReportGone(f"the report's patient: {subject or 'none'} is gone")
    carried = {patient.reference, document.reference}
    wanted = sorted(relative_references([document.resource]) - carried)
    found = store.get_many(tuple(ref.split("/", 1)) for ref in wanted)  # type: ignore[misc]
    linked = {f"{t}/{i}": s.resource for (t, i), s in found.items() if not s.deleted}
    return report_bundle(
        patient=patient.resource,
        document=document.resource,
        linked=linked,
        clinic_system_base=clinic_system_base,
    )
