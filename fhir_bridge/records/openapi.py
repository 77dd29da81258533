"""The OpenAPI 3.0.3 document of the internal session API, built from the marshmallow schemas."""

from __future__ import annotations

import copy
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from fhir_bridge.records.errors import Problem, to_operation_outcome
from fhir_bridge.records.openapi_operator import SCHEMAS, operator_paths, refusals
from fhir_bridge.records.referral_schemas import (
    DeclineSchema,
    ReferralListSchema,
    ReferralViewSchema,
)
from fhir_bridge.records.schemas import SessionListSchema, SessionSchema, SessionViewSchema
from fhir_bridge.records.vocabulary import Vocabulary

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
JSON = "application/json"
FHIR_JSON = "application/fhir+json"

#: The contract example (contracts/session.md): a completed 55-minute neck session.
EXAMPLE_RECORD: dict[str, Any] = {
    "session_id": "MMC-2026-000123",
    "status": "completed",
    "patient": {
        "mrn": "P-1001",
        "family_name": "Rivera",
        "given_names": ["Ana", "Lucia"],
        "birth_date": "1979-03-14",
        "sex": "female",
        "coverage": {"payer_id": "ACME-HEALTH", "member_id": "XQZ123456789"},
    },
    "therapist": {"npi": "1234567893", "name": "Sam Lee, LMT"},
    "referral": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "SR-8891"},
    "started_at": "2026-11-20T10:00:00-05:00",
    "ended_at": "2026-11-20T10:55:00-05:00",
    "diagnoses": ["M54.2"],
    "treatments": [
        {
            "technique": "trigger_point_therapy",
            "body_site": "upper_trapezius",
            "laterality": "left",
            "minutes": 20,
        },
        {"technique": "muscle_energy_technique", "body_site": "cervical_spine", "minutes": 15},
        {"technique": "swedish_massage", "body_site": "upper_back", "minutes": 15},
    ],
    "assessments": [
        {
            "phase": "pre",
            "measure": "pain_nrs",
            "value": 7,
            "body_site": "neck",
            "at": "2026-11-20T10:02:00-05:00",
        },
        {
            "phase": "post",
            "measure": "pain_nrs",
            "value": 4,
            "body_site": "neck",
            "at": "2026-11-20T10:52:00-05:00",
        },
        {
            "phase": "pre",
            "measure": "cervical_rotation_rom",
            "laterality": "left",
            "value": 45,
            "unit": "deg",
        },
        {
            "phase": "post",
            "measure": "cervical_rotation_rom",
            "laterality": "left",
            "value": 60,
            "unit": "deg",
        },
        {"phase": "pre", "measure": "oswestry_disability_index", "value": 24},
        {"phase": "pre", "measure": "sleep_quality_nrs", "value": 3},
    ],
    "goals": [
        {
            "goal_id": "G1",
            "description": "Turn head fully to check the blind spot while driving",
            "measure": "cervical_rotation_rom",
            "laterality": "left",
            "target": 70,
            "due": "2026-12-31",
        }
    ],
    "notes": {
        "subjective": "Neck pain 7/10 after desk work; wakes twice a night.",
        "objective": "Taut band left upper trapezius; rotation limited.",
        "assessment": "Pain and rotation improved within session.",
        "plan": "Continue 2x/week for 4 weeks; home stretching.",
    },
}

EXAMPLE_VIEW: dict[str, Any] = {
    "session_id": "MMC-2026-000123",
    "status": "completed",
    "received_at": "2026-11-20T16:01:12Z",
    "updated_at": "2026-11-20T16:01:12Z",
    "record": EXAMPLE_RECORD,
    "resources": [
        {
            "resourceType": "Encounter",
            "id": "3f6c1e0a-6b0e-5d43-9d7e-2f0c4f1a9b11",
            "versionId": "1",
        },
        {
            "resourceType": "Procedure",
            "id": "8d2b7f54-0c1a-5e9b-a3f4-61d0e2c7b8a2",
            "versionId": "1",
        },
    ],
    "billing": [
        {"code": "97140", "system": "http://www.ama-assn.org/go/cpt", "units": 2, "minutes": 35},
        {"code": "97124", "system": "http://www.ama-assn.org/go/cpt", "units": 1, "minutes": 15},
    ],
    "flags": [],
}

EXAMPLE_PROBLEMS = [
    Problem("treatments[2].minutes", "must be from 1 to 120 minutes", 150, None, "value"),
    Problem(
        "treatments[0].technique",
        "no entry for 'reiki' in mappings/ (techniques)",
        "reiki",
        ("cupping", "deep_tissue_massage", "swedish_massage"),
        "code-invalid",
    ),
    Problem(
        "assessments[0].at",
        "the UTC offset is missing: write it like 2026-11-20T10:00:00-05:00 (or ...Z)",
        None,
        None,
        "value",
    ),
    Problem("patient.coverage.member_id", "is required", None, None, "required"),
]

OPERATION_OUTCOME: dict[str, Any] = {
    "type": "object",
    "description": "FHIR R4 OperationOutcome: one issue per problem, located by its JSON path.",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {
                        "type": "string",
                        "enum": ["fatal", "error", "warning", "information"],
                    },
                    "code": {
                        "type": "string",
                        "description": "Issue type: invalid, required, value, code-invalid, ...",
                    },
                    "diagnostics": {
                        "type": "string",
                        "description": "What is wrong, followed by the allowed values if any.",
                    },
                    "expression": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "JSON path of the problem, e.g. treatments[2].minutes.",
                    },
                },
            },
        },
    },
}


def _outcome(description: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {FHIR_JSON: media, JSON: media}}


def _view(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": "SessionView", "example": EXAMPLE_VIEW}},
    }
    if headers:
        response["headers"] = headers
    return response


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "in": "query",
        "name": name,
        "required": False,
        "description": description,
        "schema": schema,
    }


def _submit_operation() -> dict[str, Any]:
    location = {
        "Location": {"description": "/api/v1/sessions/{session_id}", "schema": {"type": "string"}}
    }
    return {
        "summary": "Submit a session record (create or replace by session_id)",
        "description": (
            "Validates the record, keeps it as received, maps it to FHIR R4 and stores the "
            "resources. Resending a session_id replaces that session (new versions, never "
            "duplicates); status entered-in-error retracts it. Every problem of a bad record is "
            "reported at once (422)."
        ),
        "operationId": "submitSession",
        "tags": ["sessions"],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": "SessionRecord", "example": EXAMPLE_RECORD},
                FHIR_JSON: {"schema": "SessionRecord"},
            },
        },
        "responses": {
            "201": _view("Created: a new session.", location),
            "200": _view("Replaced: the session_id was already on file.", location),
            "400": _outcome("The body is not JSON."),
            "404": _outcome("A retraction of a session that is not on file."),
            "413": _outcome("The body is too large."),
            "415": _outcome("The body is not application/json."),
            "422": _outcome(
                "The record is invalid: one issue per problem, with its JSON path.",
                to_operation_outcome(EXAMPLE_PROBLEMS),
            ),
        },
    }


def _read_operation() -> dict[str, Any]:
    return {
        "summary": "Read one session",
        "operationId": "readSession",
        "tags": ["sessions"],
        "parameters": [
            {
                "in": "path",
                "name": "session_id",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[A-Za-z0-9\-\.]{1,64}$"},
            }
        ],
        "responses": {
            "200": _view("The session: record as stored, resources, billing, flags."),
            "404": _outcome("No session with that id."),
        },
    }


def _search_operation() -> dict[str, Any]:
    return {
        "summary": "List sessions (arrival order, cursor paging)",
        "operationId": "listSessions",
        "tags": ["sessions"],
        "parameters": [
            _query("patient", "The patient's MRN.", {"type": "string"}),
            _query("since", "Received at or after this date or date-time.", {"type": "string"}),
            _query(
                "_cursor", "Opaque cursor from the previous page's next link.", {"type": "string"}
            ),
            _query(
                "_count",
                "Page size.",
                {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            ),
        ],
        "responses": {
            "200": {
                "description": "One page of sessions; next is absent on the last page.",
                "content": {
                    JSON: {"schema": "SessionList", "example": {"sessions": [EXAMPLE_VIEW]}}
                },
            },
            "400": _outcome("An unknown parameter, or a bad since, _count or _cursor."),
        },
    }


def _referral_operations() -> dict[str, dict[str, Any]]:
    """The referral inbox paths."""
    view = {JSON: {"schema": "ReferralView"}}
    path_id = {"in": "path", "name": "id", "required": True, "schema": {"type": "string"}}
    actions = {}
    for action, summary in (
        ("accept", "Accept a referral (requested -> accepted)"),
        ("decline", "Decline a referral with a reason (requested -> rejected)"),
        ("complete", "Complete a referral (accepted | in-progress -> completed)"),
    ):
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{action}Referral",
            "tags": ["referrals"],
            "parameters": [path_id],
            "responses": {
                "200": {"description": "The referral after the action.", "content": view},
                "404": _outcome("No referral with that id."),
                "409": _outcome("The referral's state does not allow it; says what does."),
            },
        }
        if action == "decline":
            operation["requestBody"] = {"required": True, "content": {JSON: {"schema": "Decline"}}}
            operation["responses"]["422"] = _outcome("No reason given.")
        actions[f"/api/v1/referrals/{{id}}/{action}"] = {"post": operation}
    return {
        "/api/v1/referrals": {
            "get": {
                "summary": "The referral inbox (arrival order, cursor paging)",
                "operationId": "listReferrals",
                "tags": ["referrals"],
                "parameters": [
                    _query("status", "The tracking Task's status.", {"type": "string"}),
                    _query("patient", "Patient id (or Patient/<id>).", {"type": "string"}),
                    _query("requester", "NPI or Practitioner/<id>.", {"type": "string"}),
                    _query("_cursor", "From the previous page's next link.", {"type": "string"}),
                    _query(
                        "_count", "Page size.", {"type": "integer", "minimum": 1, "maximum": 500}
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "One page.",
                        "content": {JSON: {"schema": "ReferralList"}},
                    },
                    "400": _outcome("An unknown parameter, or a bad requester, _count or _cursor."),
                },
            }
        },
        "/api/v1/referrals/{id}": {
            "get": {
                "summary": "One referral",
                "operationId": "readReferral",
                "tags": ["referrals"],
                "parameters": [path_id],
                "responses": {
                    "200": {"description": "The referral.", "content": view},
                    "404": _outcome("No referral with that id."),
                },
            }
        },
        "/api/v1/referrals/{id}/progress-report": {
            "get": {
                "summary": "The referral's progress report or discharge summary (HTML or PDF)",
                "description": (
                    "Generated from the outcome engine: baseline, latest and change per measure, "
                    "charts, visits, goals, the therapist's assessment and plan. Accept: "
                    "text/html or application/pdf."
                ),
                "operationId": "readProgressReport",
                "tags": ["referrals"],
                "parameters": [
                    path_id,
                    {
                        "in": "query",
                        "name": "kind",
                        "required": False,
                        "schema": {"type": "string", "enum": ["progress", "discharge"]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The report.",
                        "content": {
                            "text/html": {"schema": {"type": "string"}},
                            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "404": _outcome("No referral with that id."),
                    "406": _outcome("Accept names neither text/html nor application/pdf."),
                },
            },
            "post": {
                "summary": "File the report now as a FHIR DocumentReference",
                "description": (
                    "Stores the report (PDF and HTML attachments) as the next version of the "
                    "referral's DocumentReference for this kind (identifier <clinic base>/report "
                    "| <id>/<kind>) and queues its delivery (outbox event report.generated), as "
                    "FHIR_BRIDGE_REPORT_EVERY_VISITS and completing the referral do on their own."
                ),
                "operationId": "fileProgressReport",
                "tags": ["referrals"],
                "parameters": [
                    path_id,
                    {
                        "in": "query",
                        "name": "kind",
                        "required": False,
                        "schema": {"type": "string", "enum": ["progress", "discharge"]},
                    },
                ],
                "responses": {
                    "201": {
                        "description": "The DocumentReference as stored (Location: its version).",
                        "content": {"application/fhir+json": {"schema": {"type": "object"}}},
                    },
                    "404": _outcome("No referral with that id."),
                    "409": _outcome("The referral has no visit to report on yet."),
                },
            },
        },
        **actions,
    }


def _vocabulary_enums(schemas: dict[str, Any], vocabulary: Vocabulary) -> None:
    """List the vocabulary keys (from mappings/) as enums of the record's fields."""
    enums = {
        "technique": vocabulary.techniques,
        "body_site": vocabulary.body_sites,
        "laterality": vocabulary.lateralities,
        "measure": vocabulary.measures,
    }
    for name in ("Treatment", "Assessment", "Goal"):
        for prop, keys in enums.items():
            field = schemas.get(name, {}).get("properties", {}).get(prop)
            if field is not None:
                field["enum"] = sorted(keys)


def openapi_spec(*, server_url: str, vocabulary: Vocabulary | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document (a dict) of ``/api/v1`` (sessions, referrals, partners and
    deliveries; every operation with the 401/403/429/503 it may answer before it runs).

    With ``vocabulary``, the technique, body-site, laterality and measure fields list the keys
    known to ``mappings/`` as enums.
    """
    spec = APISpec(
        title="fhir-bridge internal API",
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "Massage-session records in (the clinic's vocabulary), their FHIR R4 outcome out."
            )
        },
        servers=[{"url": server_url}],
    )
    spec.components.security_scheme(
        "smartBackendServices",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "An access token from POST /auth/token (SMART Backend Services, "
                "client_credentials with a private_key_jwt assertion); role clinic or admin."
            ),
        },
    )
    spec.components.schema("SessionRecord", schema=SessionSchema)
    spec.components.schema("SessionView", schema=SessionViewSchema)
    spec.components.schema("SessionList", schema=SessionListSchema)
    spec.components.schema("OperationOutcome", component=copy.deepcopy(OPERATION_OUTCOME))
    spec.tag({"name": "sessions", "description": "Massage-session records"})
    spec.path(
        path="/api/v1/sessions",
        operations={"post": _submit_operation(), "get": _search_operation()},
    )
    spec.path(path="/api/v1/sessions/{session_id}", operations={"get": _read_operation()})
    spec.components.schema("ReferralView", schema=ReferralViewSchema)
    spec.components.schema("ReferralList", schema=ReferralListSchema)
    spec.components.schema("Decline", schema=DeclineSchema)
    spec.tag({"name": "referrals", "description": "Physicians' referrals: the clinic's inbox"})
    for path, operations in _referral_operations().items():
        spec.path(path=path, operations=operations)
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, component=copy.deepcopy(schema))
    spec.tag({"name": "deliveries", "description": "Partners and deliveries to them"})
    for path, operations in operator_paths().items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, answer in refusals().items():
                operation["responses"].setdefault(status, answer)
    document["security"] = [{"smartBackendServices": []}]
    if vocabulary is not None:
        _vocabulary_enums(document["components"]["schemas"], vocabulary)
    return copy.deepcopy(document)
