"""Instance history for FHIR clients (``_since``, ``_count``, paging) within the caller's scope."""

from __future__ import annotations

from datetime import datetime

from fhir_bridge.services.resources import check_visible
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.history import HistoryPage, history_page
from fhir_bridge.store.member_scope import EVERYTHING, MemberScope


def instance_history(
    runtime: Runtime,
    resource_type: str,
    resource_id: str,
    scope: MemberScope = EVERYTHING,
    *,
    since: datetime | None = None,
    below: int | None = None,
    count: int | None = None,
) -> HistoryPage:
    """One page of a resource's versions, newest first; raises ResourceNotFound."""
    with read_session(runtime.sessions) as session:
        check_visible(session, scope, resource_type, resource_id)
        return history_page(
            session, resource_type, resource_id, since=since, below=below, count=count
        )
