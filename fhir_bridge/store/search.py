"""Run a parsed FHIR search against the index, as of a snapshot, with keyset paging.

Every page of one search is evaluated "as of" the same snapshot sequence (see snapshot.py), and
pages are cut by keyset cursors on (sort key, version pk), never by offsets: entries written,
updated or deleted while a client pages can neither be skipped nor repeated.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.orm import Session, aliased

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.dates import MAX_DT, MIN_DT
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.fhir.search_index import normalize_string
from fhir_bridge.fhir.search_query import Criterion, ReferenceValue, SearchQuery
from fhir_bridge.store.member_scope import (
    COMPARTMENT_TYPES,
    EVERYTHING,
    MemberScope,
    member_probe,
    member_shortcut,
    members_among,
    visible,
)
from fhir_bridge.store.models import (
    ResourceVersion,
    SearchDate,
    SearchReference,
    SearchString,
    SearchToken,
)
from fhir_bridge.store.repository import StoredResource, _stored
from fhir_bridge.store.snapshot import current_sequence, current_sequence_probing

V = ResourceVersion
MAX_INCLUDED = 1000

# Which criterion drives the query (looked up through its index); the rest are probes.
_DRIVER_RANK = {"reference": 0, "special_id": 1, "token": 2, "date": 3, "string": 4, "special": 5}


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: snapshot, the boundary row's sort key and pk, and the direction."""

    snapshot: int
    key: Any
    pk: int
    forward: bool

    def encode(self) -> str:
        """Opaque URL-safe token."""
        key = self.key.isoformat() if isinstance(self.key, datetime) else self.key
        raw = jsonio.dumps({"s": self.snapshot, "k": key, "p": self.pk, "f": self.forward})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, *, date_key: bool) -> Cursor:
        """Parse a token made by encode(); anything else (a tampered token: huge numbers, an
        object or list as key, a NUL, a key of the wrong kind) is a 400 naming ``_cursor``."""
        try:
            raw = jsonio.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(raw, dict) or set(raw) != {"s", "k", "p", "f"}:
                raise ValueError("not a cursor")
            snapshot, pk, forward = _row_number(raw["s"]), _row_number(raw["p"]), raw["f"]
            key = _cursor_key(raw["k"], date_key=date_key)
            if not isinstance(forward, bool):
                raise ValueError("direction is not a boolean")
            return cls(snapshot, key, pk, forward)
        except (ValueError, KeyError, TypeError):
            raise FhirError(
                400, error("invalid", "The paging cursor is not valid", "_cursor")
            ) from None


#: the largest row number a cursor may carry (both databases store 64-bit integers)
_MAX_ROW = 2**63 - 1
_MAX_KEY_CHARS = 256


def _row_number(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_ROW:
        raise ValueError("row number out of range")
    return value


def _cursor_key(value: Any, *, date_key: bool) -> Any:
    """A date sort needs a naive ISO datetime; otherwise None (no sort) or an id (``_id``)."""
    if date_key:
        if not isinstance(value, str) or len(value) > _MAX_KEY_CHARS:
            raise ValueError("date key is not a string")
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            raise ValueError("date key has a time zone")
        return parsed
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > _MAX_KEY_CHARS:
        raise ValueError("key is not an id")
    return value


@dataclass
class SearchPage:
    """One page of matches, what _include/_revinclude brought, and links to neighbours."""

    matches: list[StoredResource]
    included: list[StoredResource] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None
    snapshot: int = 0


def _visible(resource_type: str, snapshot: int) -> ColumnElement[bool]:
    return and_(
        V.resource_type == resource_type,
        V.pk <= snapshot,
        or_(V.superseded_by.is_(None), V.superseded_by > snapshot),
        V.deleted.is_(False),
    )


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _date_match(
    low: Any, high: Any, prefix: str, lo: datetime, hi: datetime
) -> ColumnElement[bool]:
    """FHIR date prefix semantics on target range [low, high) against search range [lo, hi)."""
    eq = and_(low >= lo, high <= hi)
    gt = high > hi
    lt = low < lo
    return {
        "eq": eq,
        "ne": not_(eq),
        "gt": gt,
        "lt": lt,
        "ge": or_(gt, eq),
        "le": or_(lt, eq),
        "sa": low >= hi,
        "eb": high <= lo,
        "ap": and_(low < hi, high > lo),  # [lo, hi) is already widened: overlapping it
    }[prefix]


def _instant_match(col: Any, prefix: str, lo: datetime, hi: datetime) -> ColumnElement[bool]:
    """The same prefixes for a point in time (meta.lastUpdated)."""
    return {
        "eq": and_(col >= lo, col < hi),
        "ne": or_(col < lo, col >= hi),
        "gt": col >= hi,
        "lt": col < lo,
        "ge": col >= lo,
        "le": col < hi,
        "sa": col >= hi,
        "eb": col < lo,
        "ap": and_(col >= lo, col < hi),
    }[prefix]


def _index_subquery(resource_type: str, crit: Criterion):
    """SELECT version_pk of index rows matching one criterion (values OR-ed)."""
    if crit.type == "token":
        t = SearchToken
        ors = []
        for val in crit.values:
            if crit.modifier == "text":
                ors.append(
                    t.text.like(_escape_like(normalize_string(val.code or "")) + "%", escape="\\")
                )
                continue
            conds = []
            if val.code is not None:
                conds.append(t.code == val.code)
            if val.system_given:
                conds.append(
                    t.system == val.system if val.system is not None else t.system.is_(None)
                )
            ors.append(and_(true(), *conds))
        return select(t.version_pk).where(
            t.resource_type == resource_type, t.param == crit.name, or_(*ors)
        )
    if crit.type == "reference":
        r = SearchReference
        ors = []
        for val in crit.values:
            if val.target_id is not None:
                cond = r.target_id == val.target_id
                if val.target_type:
                    cond = and_(cond, r.target_type == val.target_type)
                ors.append(or_(cond, r.reference == val.url) if val.url else cond)
            elif val.url:
                ors.append(r.reference == val.url)
        return select(r.version_pk).where(
            r.resource_type == resource_type, r.param == crit.name, or_(false(), *ors)
        )
    if crit.type == "date":
        d = SearchDate
        ors = [_date_match(d.low, d.high, val.prefix, val.low, val.high) for val in crit.values]
        return select(d.version_pk).where(
            d.resource_type == resource_type, d.param == crit.name, or_(*ors)
        )
    if crit.type == "string":
        s = SearchString
        ors = []
        for val in crit.values:
            if crit.modifier == "exact":
                ors.append(s.exact == val.value)
            else:
                needle = _escape_like(normalize_string(val.value))
                pattern = f"%{needle}%" if crit.modifier == "contains" else f"{needle}%"
                ors.append(s.normalized.like(pattern, escape="\\"))
        return select(s.version_pk).where(
            s.resource_type == resource_type, s.param == crit.name, or_(*ors)
        )
    raise FhirError(
        400,
        error("not-supported", f"Search parameter type of {crit.name} is not supported", crit.name),
    )


_INDEX_TABLES = {
    "token": SearchToken,
    "reference": SearchReference,
    "date": SearchDate,
    "string": SearchString,
}


def _criterion_condition(
    resource_type: str, crit: Criterion, *, drive: bool
) -> ColumnElement[bool]:
    """SQL condition on V for one criterion; ``drive`` uses IN (index-first), else EXISTS."""
    if crit.name == "_id":
        return V.resource_id.in_([v.value for v in crit.values])
    if crit.name == "_lastUpdated":
        return or_(*[_instant_match(V.last_updated, v.prefix, v.low, v.high) for v in crit.values])
    table = _INDEX_TABLES[crit.type]
    if crit.missing is not None:
        present = exists(
            select(table.version_pk).where(table.version_pk == V.pk, table.param == crit.name)
        )
        return not_(present) if crit.missing else present
    sub = _index_subquery(resource_type, crit)
    cond = V.pk.in_(sub) if drive else exists(sub.where(table.version_pk == V.pk))
    return not_(cond) if crit.modifier == "not" else cond


def _conditions(query: SearchQuery) -> list[ColumnElement[bool]]:
    def rank(c: Criterion) -> int:
        if c.name == "_id":
            return _DRIVER_RANK["special_id"]
        if c.missing is not None or c.modifier == "not":
            return 99
        return _DRIVER_RANK.get(c.type, 50)

    ordered = sorted(query.criteria, key=rank)
    conds = []
    for i, crit in enumerate(ordered):
        drive = i == 0 and rank(crit) < 99 and crit.name not in ("_id", "_lastUpdated")
        conds.append(_criterion_condition(query.resource_type, crit, drive=drive))
    return conds


def _sort_expression(query: SearchQuery) -> tuple[Any, bool, bool]:
    """(key expression or None, descending, key is a datetime)."""
    if not query.sort:
        return None, False, False
    if len(query.sort) > 1:
        raise FhirError(400, error("not-supported", "Only one _sort key is supported", "_sort"))
    key = query.sort[0]
    if key.name == "_lastUpdated":
        return V.last_updated, key.descending, True
    if key.name == "_id":
        return V.resource_id, key.descending, False
    d = aliased(SearchDate)
    agg = func.max(d.high) if key.descending else func.min(d.low)
    sub = select(agg).where(d.version_pk == V.pk, d.param == key.name).scalar_subquery()
    return func.coalesce(sub, MIN_DT if key.descending else MAX_DT), key.descending, True


def _after(
    key_expr: Any, descending: bool, cursor: Cursor, *, forward: bool
) -> ColumnElement[bool]:
    """Rows strictly after (forward) or before the cursor row in the page order."""
    greater = forward != descending
    if key_expr is None:
        return V.pk > cursor.pk if greater else V.pk < cursor.pk
    key = cursor.key
    if greater:
        return or_(key_expr > key, and_(key_expr == key, V.pk > cursor.pk))
    return or_(key_expr < key, and_(key_expr == key, V.pk < cursor.pk))


def _order(key_expr: Any, descending: bool, *, forward: bool) -> list[Any]:
    asc = forward != descending
    cols = [] if key_expr is None else [key_expr.asc() if asc else key_expr.desc()]
    cols.append(V.pk.asc() if asc else V.pk.desc())
    return cols


def named_patients(query: SearchQuery) -> tuple[str, ...] | None:
    """The patient ids a search of a compartment type is limited to by ``patient=``, if any."""
    if query.resource_type not in COMPARTMENT_TYPES:
        return None
    for crit in query.criteria:
        if (
            crit.name != "patient"
            or crit.type != "reference"
            or crit.modifier not in (None, "Patient")
        ):
            continue
        ids = []
        for value in crit.values:
            if not isinstance(value, ReferenceValue) or value.target_id is None:
                break
            if value.target_type not in (None, "Patient"):
                break
            ids.append(value.target_id)
        else:
            return tuple(ids)
    return None


def _scope_condition(session: Session, query: SearchQuery, scope: MemberScope) -> Any:
    """The member condition; none at all when every patient the search names is a member.

    Then the ``patient=`` criterion already keeps every row inside members' compartments, and
    one prepared membership check replaces a per-row condition that is costly to plan.
    """
    if scope.unrestricted or not member_shortcut(scope, query.resource_type):
        return visible(scope, query.resource_type)
    named = named_patients(query)
    if named and members_among(session, scope, named) == set(named):
        return true()
    return visible(scope, query.resource_type)


def _snapshot_and_scope(
    session: Session, query: SearchQuery, scope: MemberScope
) -> tuple[int, Any]:
    """A new search's snapshot and member condition. On PostgreSQL a search naming one
    patient checks membership in the snapshot's own round trip (the common payer search)."""
    shortcut = not scope.unrestricted and member_shortcut(scope, query.resource_type)
    named = named_patients(query) if shortcut else None
    if named and len(named) == 1 and session.get_bind().dialect.name == "postgresql":
        snapshot, member = current_sequence_probing(session, *member_probe(scope, named[0]))
        return snapshot, true() if member else visible(scope, query.resource_type)
    return current_sequence(session), _scope_condition(session, query, scope)


def run_search(session: Session, query: SearchQuery, scope: MemberScope = EVERYTHING) -> SearchPage:
    """Execute ``query`` (one page) within ``scope``; FhirError(400) for a bad cursor or sort."""
    key_expr, descending, date_key = _sort_expression(query)
    cursor = Cursor.decode(query.cursor, date_key=date_key) if query.cursor else None
    if cursor:
        snapshot, scope_condition = cursor.snapshot, _scope_condition(session, query, scope)
    else:
        snapshot, scope_condition = _snapshot_and_scope(session, query, scope)
    where = [
        _visible(query.resource_type, snapshot),
        scope_condition,
        *_conditions(query),
    ]

    page = SearchPage(matches=[], snapshot=snapshot)
    if query.total == "accurate" or query.summary == "count":
        page.total = session.execute(select(func.count()).select_from(V).where(*where)).scalar_one()
    if query.summary == "count" or query.count == 0:
        return page

    forward = cursor.forward if cursor else True
    stmt_where = list(where)
    if cursor:
        stmt_where.append(_after(key_expr, descending, cursor, forward=forward))
    columns = [V] if key_expr is None else [V, key_expr.label("sort_key")]
    rows = session.execute(
        select(*columns)
        .where(*stmt_where)
        .order_by(*_order(key_expr, descending, forward=forward))
        .limit(query.count + 1)
    ).all()
    more = len(rows) > query.count
    rows = rows[: query.count]
    if not forward:
        rows.reverse()
    page.matches = [_stored(r[0]) for r in rows]

    def boundary(row: Any, fwd: bool) -> str:
        key = None if key_expr is None else row[1]
        return Cursor(snapshot, key, row[0].pk, fwd).encode()

    if rows:
        has_next = more if forward else True
        has_prev = (cursor is not None) if forward else more
        page.next_cursor = boundary(rows[-1], True) if has_next else None
        page.previous_cursor = boundary(rows[0], False) if has_prev else None
    page.included = _includes(session, query, page.matches, snapshot, scope)
    return page


def _fetch_visible(
    session: Session, refs: dict[str, set[str]], snapshot: int, scope: MemberScope
) -> list[StoredResource]:
    found: list[StoredResource] = []
    for resource_type, ids in refs.items():
        if not ids:
            continue
        rows = session.execute(
            select(V)
            .where(
                _visible(resource_type, snapshot),
                visible(scope, resource_type),
                V.resource_id.in_(sorted(ids)),
            )
            .limit(MAX_INCLUDED)
        ).scalars()
        found.extend(_stored(r) for r in rows)
    return found


def _includes(
    session: Session,
    query: SearchQuery,
    matches: Sequence[StoredResource],
    snapshot: int,
    scope: MemberScope,
) -> list[StoredResource]:
    if not matches or not (query.includes or query.revincludes):
        return []
    page_pks = [m.version_pk for m in matches]
    seen = {(m.resource_type, m.resource_id) for m in matches}
    targets: dict[str, set[str]] = defaultdict(set)
    for inc in query.includes:
        r = SearchReference
        stmt = select(r.target_type, r.target_id).where(
            r.version_pk.in_(page_pks), r.param == inc.param, r.target_id.is_not(None)
        )
        if inc.target_type:
            stmt = stmt.where(r.target_type == inc.target_type)
        for target_type, target_id in session.execute(stmt):
            if target_type and (target_type, target_id) not in seen:
                targets[target_type].add(target_id)
    included = _fetch_visible(session, targets, snapshot, scope)
    ids = [m.resource_id for m in matches]
    for inc in query.revincludes:
        r = SearchReference
        rows = session.execute(
            select(V)
            .where(
                _visible(inc.source_type, snapshot),
                visible(scope, inc.source_type),
                V.pk.in_(
                    select(r.version_pk).where(
                        r.resource_type == inc.source_type,
                        r.param == inc.param,
                        r.target_type == query.resource_type,
                        r.target_id.in_(ids),
                    )
                ),
            )
            .order_by(V.pk)
            .limit(MAX_INCLUDED)
        ).scalars()
        included.extend(_stored(row) for row in rows)
    unique: dict[tuple[str, str], StoredResource] = {}
    for res in included:
        key = (res.resource_type, res.resource_id)
        if key not in seen:
            unique.setdefault(key, res)
    return list(unique.values())


def as_of(resource_type: str, snapshot: int) -> ColumnElement[bool]:
    """Rows of ``resource_type`` current (and not deleted) as of ``snapshot``."""
    return _visible(resource_type, snapshot)


def criteria_condition(query: SearchQuery) -> ColumnElement[bool]:
    """The search criteria of ``query`` (no scope, no paging) as one condition on rows."""
    return and_(true(), *_conditions(query))
