"""A progress report or discharge summary as a US Core DocumentReference (PDF and HTML).

Pure: the rendered report and the resources it summarises in, one DocumentReference out. Its
identifier (``<clinic base>/report``, ``<referral id>/<kind>``) and the id derived from it stay
the same when the report is regenerated, so a store or a partner keeps one resource whose
versions are the successive reports. LOINC document types, both in the Da Vinci CDex value set
``cdex-loinc-attachment-codes``: 11506-3 Progress note (https://loinc.org/11506-3/), 18842-5
Discharge summary (https://loinc.org/18842-5/). Not wired into the outbox, ``$documentation``,
``$everything`` or CDex yet.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

from fhir_bridge.fhir.ids import stable_id
from fhir_bridge.mapping.cdex import LOINC
from fhir_bridge.mapping.clinical_note import DOCREF_CATEGORY, US_CORE_DOCREF

REPORT_TYPES = {
    "progress": ("11506-3", "Progress note"),
    "discharge": ("18842-5", "Discharge summary"),
}


def _attachment(content_type: str, data: bytes, title: str, created: str) -> dict[str, Any]:
    return {
        "contentType": content_type,
        "language": "en",
        "data": base64.b64encode(data).decode(),
        "size": len(data),
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),  # R4: SHA-1, base64
        "title": title,
        "creation": created,
    }


def report_document_reference(
    *,
    kind: str,
    clinic_system_base: str,
    referral_id: str,
    patient_reference: str,
    author_reference: str | None,
    procedure_ids: Sequence[str],
    observation_ids: Sequence[str],
    period: tuple[str, str] | None,
    pdf: bytes,
    html: str,
    generated_at: str,
) -> dict[str, Any]:
    """The report as a DocumentReference; ``kind`` is "progress" or "discharge"."""
    code, display = REPORT_TYPES[kind]
    system, value = f"{clinic_system_base}/report", f"{referral_id}/{kind}"
    title = f"{display}, medical massage"
    related = [{"reference": f"ServiceRequest/{referral_id}"}]
    related += [{"reference": f"Procedure/{i}"} for i in procedure_ids]
    related += [{"reference": f"Observation/{i}"} for i in observation_ids]
    context: dict[str, Any] = {"related": related}
    if period:
        context["period"] = {"start": period[0], "end": period[1]}
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": stable_id("DocumentReference", system, value),
        "meta": {"profile": [US_CORE_DOCREF]},
        "identifier": [{"system": system, "value": value}],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": title},
        "category": [
            {
                "coding": [
                    {"system": DOCREF_CATEGORY, "code": "clinical-note", "display": "Clinical Note"}
                ]
            }
        ],
        "subject": {"reference": patient_reference},
        "date": generated_at,
        "description": f"{title}, generated from the clinic's structured records",
        "content": [
            {"attachment": _attachment("application/pdf", pdf, title, generated_at)},
            {"attachment": _attachment("text/html", html.encode("utf-8"), title, generated_at)},
        ],
        "context": context,
    }
    if author_reference:
        doc["author"] = [{"reference": author_reference}]
    return doc
