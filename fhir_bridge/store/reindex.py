"""Rebuild the search index of stored versions, after a search parameter was added.

Index rows are written with each version; a parameter added later (Patient ``gender``) has no
rows for what was stored before. ``reindex`` deletes and re-extracts the rows of every version
of the given types, in batches, each batch one transaction (search answers stay correct for the
other types meanwhile; the type being rebuilt may miss matches until its batch commits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import sessionmaker

from fhir_bridge.fhir import jsonio
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.models import (
    ResourceVersion,
    SearchDate,
    SearchReference,
    SearchString,
    SearchToken,
)
from fhir_bridge.store.repository import ResourceStore

V = ResourceVersion
BATCH = 500
_TABLES = (SearchToken, SearchReference, SearchDate, SearchString)


def reindex(
    sessions: sessionmaker,
    resource_types: Iterable[str],
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Re-extract the index rows of every stored version of ``resource_types``; returns how many
    versions were indexed. Deleted versions (no content to index) are skipped."""
    done = 0
    for resource_type in resource_types:
        after = 0
        while True:
            with write_session(sessions) as session:
                rows = session.execute(
                    select(V.pk, V.content)
                    .where(V.resource_type == resource_type, V.pk > after, V.deleted.is_(False))
                    .order_by(V.pk)
                    .limit(batch)
                ).all()
                if not rows:
                    break
                pks = [r.pk for r in rows]
                for table in _TABLES:
                    session.execute(delete(table).where(table.version_pk.in_(pks)))
                ResourceStore(session)._index_many((r.pk, jsonio.loads(r.content)) for r in rows)
                after = pks[-1]
            done += len(rows)
            if progress:
                progress(len(rows))
    return done


def count_versions(sessions: sessionmaker, resource_types: Iterable[str]) -> int:
    """How many versions ``reindex`` would index."""
    with read_session(sessions) as session:
        return session.execute(
            select(func.count())
            .select_from(V)
            .where(V.resource_type.in_(list(resource_types)), V.deleted.is_(False))
        ).scalar_one()
