"""Reading documented sessions: one by id, a keyset page, and the view the API and console
show (the record as received, the resources it became, billing units from the minutes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.mapping.clinical import billing_lines
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.records.schemas import load_session
from fhir_bridge.records.vocabulary import Vocabulary
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.sessions import SessionStore, StoredSession


def get_session(runtime: Runtime, session_id: str) -> StoredSession:
    """The stored session; FhirError(404) when unknown."""
    with read_session(runtime.sessions) as session:
        found = SessionStore(session).get(session_id)
    if found is None:
        raise FhirError(404, error("not-found", "No session with that id", "session_id"))
    return found


def list_sessions(
    runtime: Runtime,
    *,
    patient_mrn: str | None,
    since: datetime | None,
    after_pk: int | None,
    limit: int,
) -> list[StoredSession]:
    """Sessions in arrival order (keyset paging on the row id)."""
    with read_session(runtime.sessions) as session:
        return SessionStore(session).list(
            patient_mrn=patient_mrn, since=since, after_pk=after_pk, limit=limit
        )


def session_view(
    stored: StoredSession, tables: MappingTables, vocabulary: Vocabulary
) -> dict[str, Any]:
    """The session as the internal API shows it, with units computed from the minutes."""
    record_json = jsonio.loads(stored.record)
    record = load_session(record_json, vocabulary=vocabulary)
    return {
        "session_id": stored.session_id,
        "status": stored.status,
        "received_at": stored.received_at.isoformat() + "Z",
        "updated_at": stored.updated_at.isoformat() + "Z",
        "record": record_json,
        "resources": stored.resources,
        "billing": [
            {"system": b.system, "code": b.code, "minutes": b.minutes, "units": b.units}
            for b in billing_lines(record, tables)
        ],
        "flags": stored.flags,
    }
