"""Da Vinci CDex 2.1 Task Data Requests: read the request, write the answer (pure functions).

A payer POSTs a Task whose ``code`` is ``cdex-temp#data-request-query`` (input: a FHIR query)
or ``cdex-temp#data-request-code`` (input: a LOINC document type); older HRex examples say
``hrex-temp#data-request`` and let the input type (``data-query`` / ``data-code``) decide.
The bridge answers at once: ``completed`` with ``output`` (a contained searchset Bundle, or a
contained DocumentReference), or ``rejected`` / ``failed`` with ``statusReason.text``. A data
request the bridge cannot answer by its kind (``data-request-questionnaire``, a DTR
Questionnaire input, an input type it does not know) is read as
:attr:`DataRequest.unsupported` and stored ``rejected`` with that reason.

``Task.for`` may be ``Patient/<id>``, an absolute ``<base>/Patient/<id>`` (as the official CDex
examples send) or an identifier (a member number). An absolute URL counts as ``Patient/<id>``
only when its base is the bridge's own FHIR base; a Patient on another server is found by
the identifier sent with it, or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

CDEX_TEMP = "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp"
HREX_TEMP = "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp"
LOINC = "http://loinc.org"
#: CDex 2.1's third kind of data request: a DTR Questionnaire (input type
#: ``http://hl7.org/fhir/uv/sdc/CodeSystem/temp#questionnaire``), which the bridge does not answer
QUESTIONNAIRE = "data-request-questionnaire"
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

    kind: str  # "query" | "code" | "other" (unsupported: a questionnaire, an unknown input)
    query: str | None
    code: str | None
    patient_reference: str | None
    patient_identifier: dict[str, Any] | None
    #: why the bridge will not answer this kind of request (it is stored ``rejected``), else None
    unsupported: str | None = None


#: inputs that qualify a request rather than say what is asked (CDex Task Data Request: POU,
#: signature; attachment requests also send these)
AUXILIARY_INPUTS = frozenset({"purpose-of-use", "signature-flag", "service-date", "payer-url"})
QUESTIONNAIRE_UNSUPPORTED = (
    "Questionnaire data requests (DTR, input type questionnaire) are not supported: ask with "
    "data-request-query (a FHIR query) or data-request-code (a LOINC document type)"
)
#: an absolute Patient URL: ``<base>/Patient/<id>``, optionally versioned
_PATIENT_URL = re.compile(
    r"(?P<base>(?i:https?)://[^\s?#]+?)/Patient/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_RELATIVE = re.compile(r"Patient/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?")


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
        (s == CDEX_TEMP and c in ("data-request-query", "data-request-code", QUESTIONNAIRE))
        or (s == HREX_TEMP and c == "data-request")
        for s, c in codes
    )


def read_request(task: dict[str, Any], own_base: str | None = None) -> DataRequest:
    """The request a CDex Task makes; RequestProblem names the element that is wrong.

    ``own_base`` is the bridge's FHIR base URL: an absolute ``Task.for`` under it is read as
    ``Patient/<id>``.
    """
    if not is_data_request(task):
        raise NotADataRequest
    if task.get("intent") != "order":
        raise RequestProblem("A CDex data request has intent 'order'", "Task.intent")
    if task.get("status") != "requested":
        # the official examples of answered Tasks (completed, with output) are not new requests
        raise RequestProblem(
            "A new CDex data request has status 'requested': the data source sets the others "
            "(accepted, in-progress, completed, rejected, failed) when it answers",
            "Task.status",
        )
    codes = _codings(task.get("code"))
    wanted = next((c for s, c in codes if s == CDEX_TEMP), None)
    queries, doc_codes, others = _inputs(task.get("input"))
    if wanted == QUESTIONNAIRE or (others and not queries and not doc_codes):
        what = ["questionnaire"] if wanted == QUESTIONNAIRE else others
        return DataRequest("other", None, None, None, None, unsupported=_unsupported(what))
    if len(queries) + len(doc_codes) != 1:
        raise RequestProblem("Exactly one data-query or data-code input is required", "Task.input")
    kind = "query" if queries else "code"
    if wanted and wanted != f"data-request-{kind}":
        raise RequestProblem(f"Task.code is {wanted} but the input is a data-{kind}", "Task.code")
    reference, identifier = _patient(task.get("for"), own_base)
    return DataRequest(
        kind=kind,
        query=queries[0] if queries else None,
        code=doc_codes[0] if doc_codes else None,
        patient_reference=reference,
        patient_identifier=identifier,
    )


def _inputs(inputs: Any) -> tuple[list[str], list[str | None], list[str]]:
    """(queries, LOINC document codes, type codes of other "what" inputs) of ``Task.input``.

    A document request with no LOINC coding (free text) gives None: answered "unsupported".
    """
    queries: list[str] = []
    doc_codes: list[str | None] = []
    others: list[str] = []
    for i, inp in enumerate(inputs if isinstance(inputs, list) else []):
        if not isinstance(inp, dict):
            continue
        kinds = [c for _, c in _codings(inp.get("type"))]
        if "data-query" in kinds:
            if not isinstance(inp.get("valueString"), str) or not inp["valueString"].strip():
                raise RequestProblem("The data-query input needs a valueString", f"Task.input[{i}]")
            queries.append(inp["valueString"].strip())
        elif "data-code" in kinds:
            loinc = [c for s, c in _codings(inp.get("valueCodeableConcept")) if s == LOINC]
            doc_codes.append(loinc[0] if loinc else None)
        else:
            others.extend(c for c in kinds if isinstance(c, str) and c not in AUXILIARY_INPUTS)
    return queries, doc_codes, others


def _unsupported(types: list[str]) -> str:
    """Why a request whose only "what" input is of a type the bridge does not answer is refused."""
    if "questionnaire" in types:
        return QUESTIONNAIRE_UNSUPPORTED
    shown = ", ".join(t[:64] for t in sorted(set(types))[:5])
    return (
        f"Input type {shown} is not supported: ask with a data-query (a FHIR query) or a "
        "data-code (a LOINC document type) input"
    )


def _patient(subject: Any, own_base: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """(``Patient/<id>`` on this server, identifier) from ``Task.for``; either may be None.

    An absolute URL on another server gives neither unless an identifier comes with it: the
    patient is then looked for by that identifier only, never by the other server's id.
    """
    if not isinstance(subject, dict):
        raise RequestProblem("Task.for names the patient the data is for", "Task.for")
    reference = subject.get("reference")
    identifier = subject.get("identifier")
    if not (isinstance(identifier, dict) and identifier.get("value")):
        identifier = None
    relative = _RELATIVE.fullmatch(reference) if isinstance(reference, str) else None
    if relative is not None:
        return f"Patient/{relative['id']}", identifier
    url = _PATIENT_URL.fullmatch(reference) if isinstance(reference, str) else None
    if url is not None:
        if identifier is not None:
            return None, identifier
        if own_base is not None and _same_base(url["base"], own_base):
            return f"Patient/{url['id']}", None
        return None, None
    if identifier is None:
        raise RequestProblem(
            "Task.for needs a Patient reference (Patient/<id> or <base>/Patient/<id>) or an "
            "identifier",
            "Task.for",
        )
    return None, identifier


def _same_base(url: str, base: str) -> bool:
    """Do two FHIR base URLs name the same server endpoint (scheme and host case-blind)?"""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme.lower(), a.netloc.lower(), a.path.rstrip("/")) == (
        b.scheme.lower(),
        b.netloc.lower(),
        b.path.rstrip("/"),
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
