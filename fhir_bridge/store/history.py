"""Instance history a page at a time: versions newest first, since an instant, keyset-paged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fhir_bridge.store.errors import ResourceNotFound
from fhir_bridge.store.models import ResourceVersion
from fhir_bridge.store.repository import StoredResource, _stored

V = ResourceVersion


@dataclass(frozen=True)
class HistoryPage:
    """Versions of one page, how many match in all, and the version the next page starts below."""

    versions: list[StoredResource]
    total: int
    next_below: int | None


def history_page(
    session: Session,
    resource_type: str,
    resource_id: str,
    *,
    since: datetime | None = None,
    below: int | None = None,
    count: int | None = None,
) -> HistoryPage:
    """Versions changed at or after ``since`` (FHIR ``_since``), below version ``below``,
    at most ``count`` (None: all); ResourceNotFound when the resource has no version at all."""
    where = [V.resource_type == resource_type, V.resource_id == resource_id]
    if since is not None:
        where.append(V.last_updated >= since)
    total = session.execute(select(func.count()).select_from(V).where(*where)).scalar_one()
    if not total and (
        since is None
        or session.scalar(
            select(V.pk).where(V.resource_type == resource_type, V.resource_id == resource_id)
        )
        is None
    ):
        raise ResourceNotFound(resource_type, resource_id)
    stmt = select(V).where(*where).order_by(V.version_id.desc())
    if below is not None:
        stmt = stmt.where(V.version_id < below)
    if count is not None:
        stmt = stmt.limit(count + 1)
    rows = [_stored(r) for r in session.execute(stmt).scalars()]
    more = count is not None and len(rows) > count
    rows = rows[:count] if count is not None else rows
    return HistoryPage(rows, total, rows[-1].version_id if more and rows else None)
