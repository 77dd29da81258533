"""Reading the store on behalf of FHIR clients: read, vread, history, search, within a scope.

A resource outside the caller's scope answers exactly like one that does not exist.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.fhir.search_query import SearchQuery
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import StatementTimeout, deadline, read_session
from fhir_bridge.store.errors import ResourceNotFound
from fhir_bridge.store.member_scope import EVERYTHING, MemberScope, visible
from fhir_bridge.store.models import ResourceVersion
from fhir_bridge.store.repository import ResourceStore
from fhir_bridge.store.repository import StoredResource as StoredResource
from fhir_bridge.store.search import SearchPage, run_search
from fhir_bridge.store.search import named_patients as named_patients


def check_visible(
    session: Session, scope: MemberScope, resource_type: str, resource_id: str
) -> None:
    """Raise ResourceNotFound unless the current version is in scope (so history follows it)."""
    if not scope.reads(resource_type):
        raise ResourceNotFound(resource_type, resource_id)
    if scope.unrestricted:
        return
    v = ResourceVersion
    found = session.scalar(
        select(v.pk).where(
            v.resource_type == resource_type,
            v.resource_id == resource_id,
            v.superseded_by.is_(None),
            visible(scope, resource_type),
        )
    )
    if found is None:
        raise ResourceNotFound(resource_type, resource_id)


def read(
    runtime: Runtime, resource_type: str, resource_id: str, scope: MemberScope = EVERYTHING
) -> StoredResource:
    """Current version; raises ResourceNotFound / ResourceGone."""
    with read_session(runtime.sessions) as session:
        check_visible(session, scope, resource_type, resource_id)
        return ResourceStore(session).read(resource_type, resource_id)


def vread(
    runtime: Runtime,
    resource_type: str,
    resource_id: str,
    version_id: int,
    scope: MemberScope = EVERYTHING,
) -> StoredResource:
    """One version; raises ResourceNotFound / ResourceGone."""
    with read_session(runtime.sessions) as session:
        check_visible(session, scope, resource_type, resource_id)
        return ResourceStore(session).vread(resource_type, resource_id, version_id)


def history(
    runtime: Runtime, resource_type: str, resource_id: str, scope: MemberScope = EVERYTHING
) -> list[StoredResource]:
    """All versions, newest first; raises ResourceNotFound."""
    with read_session(runtime.sessions) as session:
        check_visible(session, scope, resource_type, resource_id)
        return ResourceStore(session).history(resource_type, resource_id)


def search(runtime: Runtime, query: SearchQuery, scope: MemberScope = EVERYTHING) -> SearchPage:
    """One page of a search within ``scope``, with includes; FhirError(400) for a bad cursor.

    A search that runs past FHIR_BRIDGE_SEARCH_TIMEOUT_SECONDS is cancelled: 503 "too-costly".
    """
    with read_session(runtime.sessions) as session:
        try:
            with deadline(session, runtime.settings.search_timeout_seconds):
                return run_search(session, query, scope)
        except StatementTimeout:
            raise FhirError(
                503,
                error(
                    "too-costly",
                    "The search took too long and was stopped; narrow it (patient, code, date)",
                    "url",
                ),
            ) from None
