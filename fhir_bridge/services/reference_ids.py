"""Bare ids on reference search parameters with several target types (``subject=123``).

FHIR R4 search 3.1.1.4.13 (reference): a bare ``[id]`` is a relative reference whose type the
server works out; it must refuse the search when the id "refers to more than one matching
resource across different types". So, per value, looking only at resources the caller may see:

- exactly one served target type has a resource with that id: the value means ``Type/id``;
- several do: 400 naming the parameter (``subject:Patient=123`` or ``Patient/123`` settles it);
- none does: the value is kept untyped and matches references to that id of any type (nothing
  is refused for being absent: a search for something that is not there finds nothing).
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.search_query import Criterion, ReferenceValue, SearchQuery
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.member_scope import EVERYTHING, MemberScope, visible
from fhir_bridge.store.models import ResourceVersion

V = ResourceVersion


def _bare(value: object) -> bool:
    return (
        isinstance(value, ReferenceValue)
        and value.target_type is None
        and value.url is None
        and value.target_id is not None
    )


def needs_resolving(query: SearchQuery) -> bool:
    """Does ``query`` carry a bare id whose type is still open?"""
    return any(c.type == "reference" and any(map(_bare, c.values)) for c in query.criteria)


def types_holding(
    session: Session, types: tuple[str, ...], resource_id: str, scope: MemberScope
) -> list[str]:
    """The types among ``types`` with a live resource ``resource_id`` the caller may see."""
    found = []
    for resource_type in types:
        hit = session.scalar(
            select(V.pk).where(
                V.resource_type == resource_type,
                V.resource_id == resource_id,
                V.superseded_by.is_(None),
                V.deleted.is_(False),
                visible(scope, resource_type),
            )
        )
        if hit is not None:
            found.append(resource_type)
    return found


def _resolve(session: Session, crit: Criterion, scope: MemberScope) -> Criterion:
    served = tuple(t for t in (crit.param.targets if crit.param else ()) if t in SEARCH_PARAMS)
    values = []
    for value in crit.values:
        if isinstance(value, ReferenceValue) and value.target_id is not None and _bare(value):
            types = types_holding(session, served or tuple(SEARCH_PARAMS), value.target_id, scope)
            if len(types) > 1:
                raise FhirError(
                    400,
                    error(
                        "invalid",
                        f"{crit.name}={value.target_id}: the id is a {' and a '.join(types)}; "
                        f"give Type/id or use {crit.name}:Type",
                        crit.name,
                    ),
                )
            if types:
                value = replace(value, target_type=types[0])
        values.append(value)
    return replace(crit, values=tuple(values))


def resolve_bare_ids(
    runtime: Runtime, query: SearchQuery, scope: MemberScope = EVERYTHING
) -> SearchQuery:
    """``query`` with every bare id typed where the store says which type it is (module doc)."""
    if not needs_resolving(query):
        return query
    with read_session(runtime.sessions) as session:
        criteria = tuple(
            _resolve(session, c, scope) if c.type == "reference" else c for c in query.criteria
        )
    return replace(query, criteria=criteria)
