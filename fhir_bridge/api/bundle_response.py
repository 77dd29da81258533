"""Shaping write answers for the wire: response entries, ``Prefer: return=``, outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from fhir_bridge.api.fhir_read import search_bundle
from fhir_bridge.fhir.dates import to_instant
from fhir_bridge.fhir.outcome import FhirError, Issue, operation_outcome
from fhir_bridge.fhir.transaction import status_line
from fhir_bridge.services.fhir_write import BundleOutcome, EntryOutcome, WriteResult
from fhir_bridge.services.resources import StoredResource

#: what ``Prefer: return=`` may ask for
RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")


def response_entry(result: WriteResult, base: str, prefer: str) -> dict[str, Any]:
    stored = result.stored
    response: dict[str, Any] = {
        "status": status_line(result.status),
        "location": f"{stored.reference}/_history/{stored.version_id}",
        "etag": stored.etag,
        "lastModified": to_instant(stored.last_updated),
    }
    entry: dict[str, Any] = {"fullUrl": f"{base}/{stored.reference}"}
    if prefer == "representation":
        entry["resource"] = orjson.Fragment(stored.content)
    elif prefer == "OperationOutcome":
        response["outcome"] = informational(result)
    if result.issues and "outcome" not in response:
        response["outcome"] = operation_outcome(result.issues)
    entry["response"] = response
    return entry


def failed_entry(exc: FhirError) -> dict[str, Any]:
    return {
        "response": {
            "status": status_line(exc.status),
            "outcome": operation_outcome(exc.issues),
        }
    }


def informational(result: WriteResult) -> dict[str, Any]:
    """An OperationOutcome saying what a successful write did (Prefer: return=OperationOutcome)."""
    stored = result.stored
    verb = "Created" if result.created else "Stored"
    text = f"{verb} {stored.reference} version {stored.version_id}"
    return operation_outcome([Issue("information", "informational", text), *result.issues])


def bundle_response(
    outcome: BundleOutcome,
    base: str,
    prefer: str,
    on_read: Callable[[StoredResource], None] | None = None,
) -> dict[str, Any]:
    """The transaction-response or batch-response Bundle; ``on_read`` hears of every resource
    a GET entry returned, a search's matches and includes too (for the audit trail)."""
    entries = []
    for entry in outcome.entries:
        if entry.search is not None:
            entries.append(search_entry(entry, base, on_read))
            continue
        if entry.result is None:
            assert entry.error is not None
            entries.append(failed_entry(entry.error))
            continue
        if entry.method == "GET" and on_read is not None:
            on_read(entry.result.stored)
        entries.append(response_entry(entry.result, base, prefer))
    return {"resourceType": "Bundle", "type": f"{outcome.kind}-response", "entry": entries}


def search_entry(
    entry: EntryOutcome, base: str, on_read: Callable[[StoredResource], None] | None
) -> dict[str, Any]:
    """A GET search entry's answer: 200 and the searchset the same ``GET [base]/Type?params``
    gets, whatever ``Prefer: return=`` says (it is about writes)."""
    assert entry.search is not None
    found = entry.search
    if on_read is not None:
        for stored in found.disclosed:
            on_read(stored)
    body = search_bundle(base, found.params, found.query, found.page)
    return {"resource": body, "response": {"status": status_line(200)}}
