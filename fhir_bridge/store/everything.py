"""``Patient/$everything``: a patient's compartment as of a snapshot, paged by version pk.

Matches are the Patient and every record whose ``patient`` reference names it, within the
caller's scope; directory resources those records reference (practitioners, organizations)
come along as included entries of the page that references them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, not_, or_, select
from sqlalchemy.orm import Session, aliased

from fhir_bridge.store.member_scope import COMPARTMENT_TYPES, DIRECTORY_TYPES, MemberScope, visible
from fhir_bridge.store.models import ResourceVersion, SearchDate, SearchReference
from fhir_bridge.store.repository import _stored
from fhir_bridge.store.search import Cursor, SearchPage, _fetch_visible
from fhir_bridge.store.snapshot import current_sequence

V = ResourceVersion


@dataclass(frozen=True)
class EverythingQuery:
    """What $everything was asked: the patient, optional types, dates, since, page size."""

    patient_id: str
    types: Sequence[str] = ()
    start: datetime | None = None
    end: datetime | None = None
    since: datetime | None = None
    count: int = 100
    cursor: str | None = None


def _in_compartment(patient_id: str, resource_type: str):
    if resource_type == "Patient":
        return V.resource_id == patient_id
    ref = aliased(SearchReference)
    return exists().where(
        ref.version_pk == V.pk,
        ref.param == "patient",
        ref.target_type == "Patient",
        ref.target_id == patient_id,
    )


def _in_dates(start: datetime | None, end: datetime | None):
    """Records with a clinical date in [start, end), and every record without one."""
    if start is None and end is None:
        return None
    d = aliased(SearchDate)
    low, high = start or datetime.min, end or datetime.max
    dated = exists().where(d.version_pk == V.pk)
    overlapping = exists().where(d.version_pk == V.pk, d.low < high, d.high > low)
    return or_(not_(dated), overlapping)


def everything(session: Session, query: EverythingQuery, scope: MemberScope) -> SearchPage:
    """One page of the patient's records within ``scope`` (empty when the patient is not)."""
    cursor = Cursor.decode(query.cursor, date_key=False) if query.cursor else None
    snapshot = cursor.snapshot if cursor else current_sequence(session)
    types = [
        t for t in ("Patient", *sorted(COMPARTMENT_TYPES)) if not query.types or t in query.types
    ]
    per_type = [
        and_(V.resource_type == t, _in_compartment(query.patient_id, t), visible(scope, t))
        for t in types
    ]
    where = [
        V.pk <= snapshot,
        or_(V.superseded_by.is_(None), V.superseded_by > snapshot),
        V.deleted.is_(False),
        or_(*per_type),
    ]
    if query.since is not None:
        where.append(V.last_updated >= query.since)
    dates = _in_dates(query.start, query.end)
    if dates is not None:
        where.append(dates)
    if cursor is not None:
        where.append(V.pk > cursor.pk)
    rows = session.scalars(select(V).where(*where).order_by(V.pk).limit(query.count + 1)).all()
    more = len(rows) > query.count
    rows = rows[: query.count]
    page = SearchPage(matches=[_stored(r) for r in rows], snapshot=snapshot)
    if more and rows:
        page.next_cursor = Cursor(snapshot, None, rows[-1].pk, True).encode()
    page.included = _directory(session, [r.pk for r in rows], snapshot, scope)
    return page


def _directory(session: Session, version_pks: list[int], snapshot: int, scope: MemberScope):
    """Practitioners, roles and organizations the page's records reference."""
    if not version_pks:
        return []
    r = SearchReference
    refs: dict[str, set[str]] = defaultdict(set)
    for target_type, target_id in session.execute(
        select(r.target_type, r.target_id).where(
            r.version_pk.in_(version_pks),
            r.target_type.in_(sorted(DIRECTORY_TYPES)),
            r.target_id.is_not(None),
        )
    ):
        refs[target_type].add(target_id)
    return _fetch_visible(session, refs, snapshot, scope)
