"""Da Vinci CDex 2.1 Task Data Requests: read the request, write the answer (pure functions).

A payer POSTs a Task whose ``code`` is ``cdex-temp#data-request-query`` (input: a FHIR query)
or ``cdex-temp#data-request-code`` (input: a LOINC document type); older HRex examples say
``hrex-temp#data-request`` and let the input type (``data-query`` / ``data-code``) decide.
The bridge answers at once: ``completed`` with ``output`` (a contained searchset Bundle, or a
contained DocumentReference), or ``rejected`` / ``failed`` with ``statusReason.text``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CDEX_TEMP = "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp"
HREX_TEMP = "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp"
LOINC = "http://loinc.org"
TASK_PROFILE = "http://hl7.org/fhir/us/davinci-cdex/StructureDefinition/cdex-task-data-request"

#: LOINC document types the bridge writes notes for (cdex-loinc-attachment-codes)
DOCUMENT_TYPES = {
    "11506-3": "Progress note",
    "18776-5": "Plan of care note",
    "28570-0": "Procedure note",
    "47420-5": "Functional status assessment note",
}


@dataclass(frozen=True)
class DataRequest:
    """What a CDex Task asks: a query or a document code, for one patient."""

    kind: str  # "query" | "code"
    query: str | None
    code: str | None
    patient_reference: str | None
    patient_identifier: dict[str, Any] | None


class NotADataRequest(Exception):
    """The Task is not a CDex data request (it is handled as a referral Task instead)."""


class RequestProblem(ValueError):
    """A CDex request that cannot be read: ``expression`` locates the problem."""

    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.expression = expression


def _codings(concept: Any) -> list[tuple[str | None, str | None]]:
    """(system, code) pairs of a CodeableConcept, whatever shape the JSON has."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return []
    return [(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict)]


def is_data_request(task: dict[str, Any]) -> bool:
    """True for a Task whose code is a CDex/HRex data request."""
    codes = _codings(task.get("code"))
    return any(
        (s == CDEX_TEMP and c in ("data-request-query", "data-request-code"))
        or (s == HREX_TEMP and c == "data-request")
        for s, c in codes
    )


def read_request(task: dict[str, Any]) -> DataRequest:
    """The request a CDex Task makes; RequestProblem names the element that is wrong."""
    if not is_data_request(task):
        raise NotADataRequest
    if task.get("intent") != "order":
        raise RequestProblem("A CDex data request has intent 'order'", "Task.intent")
    codes = _codings(task.get("code"))
    wanted = next((c for s, c in codes if s == CDEX_TEMP), None)
    queries, doc_codes = [], []
    inputs = task.get("input")
    for i, inp in enumerate(inputs if isinstance(inputs, list) else []):
        if not isinstance(inp, dict):
            continue
        kinds = {c for _, c in _codings(inp.get("type"))}
        if "data-query" in kinds:
            if not isinstance(inp.get("valueString"), str) or not inp["valueString"].strip():
                raise RequestProblem("The data-query input needs a valueString", f"Task.input[{i}]")
            queries.append(inp["valueString"].strip())
        elif "data-code" in kinds:
            loinc = [c for s, c in _codings(inp.get("valueCodeableConcept")) if s == LOINC]
            doc_codes.append(loinc[0] if loinc else None)
    if len(queries) + len(doc_codes) != 1:
        raise RequestProblem("Exactly one data-query or data-code input is required", "Task.input")
    kind = "query" if queries else "code"
    if wanted and wanted != f"data-request-{kind}":
        raise RequestProblem(f"Task.code is {wanted} but the input is a data-{kind}", "Task.code")
    subject = task.get("for")
    if not isinstance(subject, dict):
        raise RequestProblem("Task.for names the patient the data is for", "Task.for")
    reference = subject.get("reference")
    identifier = subject.get("identifier")
    if not (isinstance(reference, str) and reference.startswith("Patient/")) and not (
        isinstance(identifier, dict) and identifier.get("value")
    ):
        raise RequestProblem("Task.for needs a Patient reference or identifier", "Task.for")
    return DataRequest(
        kind=kind,
        query=queries[0] if queries else None,
        code=doc_codes[0] if doc_codes else None,
        patient_reference=reference if isinstance(reference, str) else None,
        patient_identifier=identifier if isinstance(identifier, dict) else None,
    )


def _output(reference: str) -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": HREX_TEMP, "code": "data-value"}]},
        "valueReference": {"reference": reference},
    }


def answered(
    task: dict[str, Any], *, contained: dict[str, Any], business_status: str, now: str
) -> dict[str, Any]:
    """The Task completed, its output the contained resource (a Bundle or DocumentReference)."""
    out = {k: v for k, v in task.items() if k not in ("id", "meta", "output", "statusReason")}
    contained = {**contained, "id": "result"}
    out["contained"] = [*(task.get("contained") or []), contained]
    out["status"] = "completed"
    out["businessStatus"] = {"text": business_status}
    out["lastModified"] = now
    out["output"] = [_output("#result")]
    return out


def refused(task: dict[str, Any], *, status: str, reason: str, now: str) -> dict[str, Any]:
    """The Task ``rejected`` (we will not) or ``failed`` (we could not), with the reason."""
    out = {k: v for k, v in task.items() if k not in ("id", "meta", "output")}
    out["status"] = status
    out["statusReason"] = {"text": reason}
    out["lastModified"] = now
    return out
