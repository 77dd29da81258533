"""The operator's part of the OpenAPI document: partners and deliveries (``/api/v1``), and the
answers every operation may give before it runs (401, 403, 429, 503).

Plain JSON Schema, written to match ``services.partners.partner_view`` and
``services.deliveries.delivery_view`` / ``attempt_view`` (``tests/unit/test_openapi.py`` checks
real answers against them).
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"
FHIR_JSON = "application/fhir+json"

_TIME = {"type": "string", "format": "date-time", "nullable": True}
_STR = {"type": "string"}
_NSTR = {"type": "string", "nullable": True}
_NINT = {"type": "integer", "nullable": True}


def _d(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


SCHEMAS: dict[str, dict[str, Any]] = {
    "PartnerView": {
        "type": "object",
        "description": "A partner as registered; never a secret or where it lives.",
        "properties": {
            "key": _d(_STR, "Short stable name (command line, API)."),
            "name": _d(_STR, "Display name."),
            "kind": _d({"type": "string", "enum": ["physician", "payer"]}, "Who the partner is."),
            "base_url": _d(_STR, "The partner's FHIR base."),
            "events": _d({"type": "array", "items": _STR}, "Outbox event types it receives."),
            "identifiers": _d(
                {
                    "type": "array",
                    "items": {"type": "object", "properties": {"system": _STR, "value": _STR}},
                },
                "NPIs (physicians) or payer ids (payers) that route deliveries to it.",
            ),
            "auth": {
                "type": "object",
                "description": "The kind of auth (and SMART's public part).",
            },
            "delivery": {
                "type": "object",
                "description": "The shape of the Bundles it takes.",
                "properties": {
                    "max_bundle_entries": _d(
                        {"type": "integer", "nullable": True, "minimum": 1},
                        "The most entries in one Bundle (null: any number); a larger delivery "
                        "goes as several ordered, idempotent Bundles with conditional references.",
                    ),
                    "bundle_type": _d(
                        {"type": "string", "enum": ["transaction", "batch"]},
                        "transaction (default) or batch (every entry's status is checked).",
                    ),
                },
            },
            "enabled": _d({"type": "boolean"}, "Whether deliveries go to it."),
            "created_at": _d(_TIME, "When it was created (UTC)."),
            "updated_at": _d(_TIME, "When it last changed (UTC)."),
        },
    },
    "PartnerList": {
        "type": "object",
        "properties": {
            "partners": _d(
                {"type": "array", "items": {"$ref": "#/components/schemas/PartnerView"}},
                "Every partner, by key.",
            )
        },
    },
    "DeliveryAttempt": {
        "type": "object",
        "description": "One attempt to send a delivery, as it happened.",
        "properties": {
            "at": {**_TIME, "description": "When the attempt started (UTC)."},
            "duration_ms": _d({"type": "number", "nullable": True}, "How long the partner took."),
            "result": _d(
                {"type": "string", "enum": ["delivered", "retry", "dead"]},
                "What the worker made of it.",
            ),
            "status": {**_NINT, "description": "The partner's HTTP status."},
            "error": _d(_NSTR, "A short reason, without PHI."),
            "outcome": {"nullable": True, "description": "The partner's OperationOutcome."},
            "worker": _d(_NSTR, "The worker that made the attempt."),
        },
    },
    "DeliveryView": {
        "type": "object",
        "description": "A delivery (an outbox event on its way to one partner); never the payload.",
        "properties": {
            "id": _d({"type": "integer"}, "The delivery's id."),
            "partner": _d(_STR, "The partner's key."),
            "event_type": _d(_STR, "The outbox event type."),
            "outbox_id": _d({"type": "integer"}, "The outbox event delivered."),
            "patient": _d(_NSTR, "Patient/<id> the event is about."),
            "status": _d(
                {"type": "string", "enum": ["pending", "delivered", "dead"]}, "Where it stands."
            ),
            "attempts": _d({"type": "integer"}, "Attempts since created or requeued."),
            "last_status": _d(_NINT, "HTTP status of the last attempt."),
            "last_error": _d(_NSTR, "Reason of the last failure (cleared by a success)."),
            "created_at": _d(_TIME, "When it was created (UTC)."),
            "first_failed_at": _d(_TIME, "First failed attempt: the give-up clock."),
            "last_attempt_at": _d(_TIME, "The last attempt (UTC)."),
            "next_attempt_at": _d(_TIME, "When it is due again (pending only)."),
            "delivered_at": _d(_TIME, "When the partner took it."),
            "in_flight_until": _d(_TIME, "A worker holds it until then."),
            "outcome": {"nullable": True, "description": "Read only: the last failure's outcome."},
            "history": {
                "type": "array",
                "description": "Read only: every attempt, oldest first.",
                "items": {"$ref": "#/components/schemas/DeliveryAttempt"},
            },
        },
    },
    "DeliveryList": {
        "type": "object",
        "properties": {
            "deliveries": _d(
                {"type": "array", "items": {"$ref": "#/components/schemas/DeliveryView"}},
                "One page, newest first.",
            ),
            "next": {"type": "string", "description": "The next page, when there is one."},
        },
    },
}


def _outcome(description: str) -> dict[str, Any]:
    media = {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}
    return {"description": description, "content": {FHIR_JSON: media, JSON: media}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _param(where: str, name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "in": where,
        "name": name,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


def operator_paths() -> dict[str, dict[str, Any]]:
    """The partner and delivery paths."""
    delivery_id = _param("path", "id", "The delivery's id.", type="integer")
    return {
        "/api/v1/partners": {
            "get": {
                "summary": "Every registered partner",
                "operationId": "listPartners",
                "tags": ["deliveries"],
                "responses": {"200": _ok("The partners.", "PartnerList")},
            }
        },
        "/api/v1/partners/{key}": {
            "get": {
                "summary": "One partner",
                "operationId": "readPartner",
                "tags": ["deliveries"],
                "parameters": [_param("path", "key", "The partner's key.")],
                "responses": {
                    "200": _ok("The partner.", "PartnerView"),
                    "404": _outcome("No partner with that key."),
                },
            }
        },
        "/api/v1/deliveries": {
            "get": {
                "summary": "Deliveries, newest first (cursor paging)",
                "operationId": "listDeliveries",
                "tags": ["deliveries"],
                "parameters": [
                    _param("query", "partner", "A partner's key."),
                    _param("query", "status", "pending, delivered or dead."),
                    _param("query", "patient", "Patient id (or Patient/<id>)."),
                    _param("query", "event", "An outbox event type."),
                    _param("query", "since", "Created at or after (ISO 8601)."),
                    _param("query", "_count", "Page size.", type="integer", minimum=1),
                    _param("query", "_cursor", "From the previous page's next link."),
                ],
                "responses": {
                    "200": _ok("One page.", "DeliveryList"),
                    "400": _outcome("An unknown parameter or a bad value."),
                },
            }
        },
        "/api/v1/deliveries/{id}": {
            "get": {
                "summary": "One delivery, with the partner's last outcome and every attempt",
                "operationId": "readDelivery",
                "tags": ["deliveries"],
                "parameters": [delivery_id],
                "responses": {
                    "200": _ok("The delivery.", "DeliveryView"),
                    "404": _outcome("No delivery with that id."),
                },
            }
        },
        "/api/v1/deliveries/{id}/payload": {
            "get": {
                "summary": "The Bundle as sent (PHI: admin credentials only, audited)",
                "operationId": "readDeliveryPayload",
                "tags": ["deliveries"],
                "parameters": [delivery_id],
                "responses": {
                    "200": {
                        "description": "The transaction Bundle, byte for byte.",
                        "content": {FHIR_JSON: {"schema": {"type": "object"}}},
                    },
                    "404": _outcome("No such delivery, or nothing sent yet."),
                },
            }
        },
        "/api/v1/deliveries/{id}/retry": {
            "post": {
                "summary": "Requeue a dead letter, due at once",
                "operationId": "retryDelivery",
                "tags": ["deliveries"],
                "parameters": [delivery_id],
                "responses": {
                    "200": _ok("The delivery, pending again.", "DeliveryView"),
                    "404": _outcome("No delivery with that id."),
                    "409": _outcome("The delivery is not dead."),
                },
            }
        },
    }


def refusals() -> dict[str, dict[str, Any]]:
    """What any operation may answer before it runs."""
    retry_after = {
        "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
    }
    www = {
        "WWW-Authenticate": {
            "description": "Bearer, with the error when a token was sent.",
            "schema": {"type": "string"},
        }
    }
    return {
        "401": {
            **_outcome("No token, or one that is expired, malformed or wrongly signed."),
            "headers": www,
        },
        "403": _outcome("The token's role or scopes do not allow this."),
        "429": {
            **_outcome("Too many requests from this client this minute."),
            "headers": retry_after,
        },
        "503": {**_outcome("The database cannot be reached (transient)."), "headers": retry_after},
    }
