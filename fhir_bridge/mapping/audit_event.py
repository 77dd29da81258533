"""AuditEvent resources (FHIR R4, DICOM and HL7 audit codes) for API access and token requests.

Pure functions: what happened in, a FHIR AuditEvent dict out.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CLIENT_ID_SYSTEM = "urn:fhir-bridge:client-id"
#: the bridge's names for its operations (an AuditEvent subtype beside restful-interaction)
OPERATION_SYSTEM = "urn:fhir-bridge:operation"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

#: interaction -> (restful-interaction code, AuditEvent.action)
_INTERACTIONS = {
    "read": ("read", "R"),
    "vread": ("vread", "R"),
    "history": ("history-instance", "R"),
    "search": ("search-type", "E"),
    "create": ("create", "C"),
    "update": ("update", "U"),
    "operation": ("operation", "E"),
    "transaction": ("transaction", "E"),
}
#: purpose of use by role when the client names none (v3 ActReason)
_PURPOSE = {
    "payer": ("COVERAGE", "coverage under policy or program"),
    "ehr": ("TREAT", "treatment"),
}


@dataclass(frozen=True)
class Access:
    """One request by an external client, as the audit trail needs it."""

    client_id: str
    role: str
    organization: str | None
    interaction: str
    resource_type: str | None
    resource_id: str | None
    query: str | None
    status: int
    address: str | None
    recorded: datetime
    #: patients whose records the response disclosed (each becomes an entity)
    patients: tuple[str, ...] = ()
    #: the operation asked (``Patient-everything``, ``cdex-data-request``, ...), if any
    operation: str | None = None


def _outcome(status: int) -> str:
    """0 success, 4 minor failure (refused), 8 serious failure (server error)."""
    return "0" if status < 400 else "4" if status < 500 else "8"


def _instant(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def _agent(client_id: str, role: str, organization: str | None, address: str | None) -> dict:
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}
            ]
        },
        "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id or "unknown"}},
        "altId": client_id or "unknown",
        "name": f"{role or 'unauthenticated'} client",
        "requestor": True,
    }
    if organization:
        agent["who"]["reference"] = organization
    if address:
        agent["network"] = {"address": address, "type": "2"}
    return agent


def _source() -> dict:
    return {
        "observer": {"display": "fhir-bridge"},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }


def access_event(access: Access) -> dict[str, Any]:
    """An AuditEvent for one FHIR request by an external client."""
    code, action = _INTERACTIONS.get(access.interaction, ("operation", "E"))
    subtype = [{"system": RESTFUL, "code": code}]
    if access.operation:
        subtype.append({"system": OPERATION_SYSTEM, "code": access.operation})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": subtype,
        "action": action,
        "recorded": _instant(access.recorded),
        "outcome": _outcome(access.status),
        "outcomeDesc": f"HTTP {access.status}",
        "agent": [_agent(access.client_id, access.role, access.organization, access.address)],
        "source": _source(),
    }
    purpose = _PURPOSE.get(access.role)
    if purpose:
        event["purposeOfEvent"] = [
            {"coding": [{"system": ACT_REASON, "code": purpose[0], "display": purpose[1]}]}
        ]
    entity: dict[str, Any] = {}
    if access.resource_type and access.resource_id:
        entity["what"] = {"reference": f"{access.resource_type}/{access.resource_id}"}
    elif access.resource_type:
        entity["what"] = {"display": access.resource_type}
    if access.query:
        entity["query"] = base64.b64encode(access.query.encode()).decode()
    entities = [entity] if entity else []
    entities += [_patient_entity(pid) for pid in sorted(access.patients)]
    if entities:
        event["entity"] = entities
    return event


def _patient_entity(patient_id: str) -> dict[str, Any]:
    """An entity naming one patient whose records were disclosed (``AuditEvent?patient=``)."""
    return {
        "what": {"reference": f"Patient/{patient_id}"},
        "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
    }


def token_event(
    *, client_id: str, outcome: str, reason: str, address: str | None, recorded: datetime
) -> dict[str, Any]:
    """An AuditEvent for a token issued (``outcome`` "issued") or refused (RFC 6749 code)."""
    issued = outcome == "issued"
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": DCM, "code": "110122", "display": "Login"}],
        "action": "E",
        "recorded": _instant(recorded),
        "outcome": "0" if issued else "4",
        "agent": [_agent(client_id, "", None, address)],
        "source": _source(),
    }
    if not issued:
        event["outcomeDesc"] = reason
    return event
