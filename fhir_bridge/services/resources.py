"""Reading the store on behalf of FHIR clients: read, vread, history, search."""

from __future__ import annotations

from fhir_bridge.fhir.search_query import SearchQuery
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.search import SearchPage, run_search


def read(runtime: Runtime, resource_type: str, resource_id: str) -> StoredResource:
    """Current version; raises ResourceNotFound / ResourceGone."""
    with read_session(runtime.sessions) as session:
        return ResourceStore(session).read(resource_type, resource_id)


def vread(
    runtime: Runtime, resource_type: str, resource_id: str, version_id: int
) -> StoredResource:
    """One version; raises ResourceNotFound / ResourceGone."""
    with read_session(runtime.sessions) as session:
        return ResourceStore(session).vread(resource_type, resource_id, version_id)


def history(runtime: Runtime, resource_type: str, resource_id: str) -> list[StoredResource]:
    """All versions, newest first; raises ResourceNotFound."""
    with read_session(runtime.sessions) as session:
        return ResourceStore(session).history(resource_type, resource_id)


def search(runtime: Runtime, query: SearchQuery) -> SearchPage:
    """One page of a search, with includes; raises FhirError(400) for a bad cursor or sort."""
    with read_session(runtime.sessions) as session:
        return run_search(session, query)
