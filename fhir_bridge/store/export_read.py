"""What an export reads: one type's visible rows in keyset pages (pk order), and payer Groups.

Every page applies the same condition as every other read path (``member_scope.visible``),
the snapshot the export reads as of, ``_since``, the ``_typeFilter`` criteria and, for a
Group export, membership of the Group. Pages are cut on the version pk, never by offset, so
memory does not grow with the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    and_,
    any_,
    bindparam,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.orm import Session, aliased

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.search_query import SearchQuery
from fhir_bridge.store.member_scope import (
    COMPARTMENT_TYPES,
    MemberScope,
    member_shortcut,
    payer_members,
    visible,
)
from fhir_bridge.store.models import ResourceVersion, SearchReference, SearchToken
from fhir_bridge.store.search import as_of, criteria_condition

V = ResourceVersion

# patients with a current, active Coverage naming :group_org as payor (any period)
_GROUP_MEMBERS = """SELECT gm_pat.target_id FROM search_reference gm_pat
 JOIN resource_version gm_cov ON gm_cov.pk = gm_pat.version_pk
 JOIN search_reference gm_payor ON gm_payor.version_pk = gm_cov.pk
 JOIN search_token gm_status ON gm_status.version_pk = gm_cov.pk
 WHERE gm_pat.resource_type = 'Coverage' AND gm_pat.param = 'patient'
 AND gm_pat.target_type = 'Patient'
 AND gm_cov.superseded_by IS NULL AND gm_cov.deleted = false
 AND gm_payor.param = 'payor' AND gm_payor.target_type = 'Organization'
 AND gm_payor.target_id = :group_org
 AND gm_status.param = 'status' AND gm_status.code = 'active'"""


def _group_condition(resource_type: str, group_org: str) -> ColumnElement[bool]:
    members = text(_GROUP_MEMBERS).bindparams(bindparam("group_org", group_org, type_=String))
    if resource_type == "Patient":
        return V.resource_id.in_(members.columns(target_id=String))  # type: ignore[arg-type]
    r = aliased(SearchReference)
    return exists(
        select(r.pk).where(
            r.version_pk == V.pk,
            r.param == "patient",
            r.target_type == "Patient",
            r.target_id.in_(members.columns(target_id=String)),  # type: ignore[arg-type]
        )
    )


@dataclass(frozen=True)
class ExportSlice:
    """What one type's export reads: scope, snapshot and the request's narrowing."""

    resource_type: str
    scope: MemberScope
    snapshot: int
    since: datetime | None = None
    #: parsed ``_typeFilter`` queries (OR-ed); empty: no filter
    filters: tuple[SearchQuery, ...] = ()
    #: the payer Organization id of a Group export
    group_org: str | None = None


def _where(s: ExportSlice, dialect: str, *, scoped: bool = True) -> list[Any]:
    condition: Any = visible(s.scope, s.resource_type) if scoped else true()
    if scoped and dialect == "postgresql" and not s.scope.unrestricted:
        # the same condition as a per-row subplan: PostgreSQL would otherwise turn its EXISTS
        # into a join over every member's records, sorted for each page (seconds per page)
        condition = select(literal(True)).where(condition).scalar_subquery().is_(True)
    where: list[Any] = [as_of(s.resource_type, s.snapshot), condition]
    if s.since is not None:
        where.append(V.last_updated > s.since)
    if s.filters:
        where.append(or_(false(), *(criteria_condition(q) for q in s.filters)))
    # the payer's own Group: its member scope (covered today) already implies membership
    own_group = s.scope.kind == "payer" and s.scope.organization_id == s.group_org
    if s.group_org is not None and not own_group:
        where.append(_group_condition(s.resource_type, s.group_org))
    return where


def _patient_column(resource_type: str) -> Any:
    if resource_type == "Patient":
        return V.resource_id
    r = aliased(SearchReference)
    return (
        select(func.min(r.target_id))
        .where(r.version_pk == V.pk, r.param == "patient", r.target_type == "Patient")
        .scalar_subquery()
    )


def _by_members(s: ExportSlice) -> bool:
    """Is the membership of a row's patients all ``visible`` asks of it? For a payer, on
    Patient and its compartment but Task and Coverage (``member_shortcut``, as a search naming
    member patients uses it): then the page keeps rows naming one of the payer's members,
    read once per export (``ExportMembers``), instead of the per-row condition."""
    return (
        s.scope.kind == "payer"
        and member_shortcut(s.scope, s.resource_type)
        and (s.resource_type == "Patient" or s.resource_type in COMPARTMENT_TYPES)
    )


class ExportMembers:
    """The payer's member patients for one export, read once (at the first page that needs
    them) with the store's member condition: a few thousand ids, not one per row read."""

    def __init__(self) -> None:
        self._ids: list[str] | None = None

    def ids(self, session: Session, scope: MemberScope) -> list[str]:
        """The member ids, sorted (read on the first call)."""
        if self._ids is None:
            self._ids = payer_members(session, scope)
        return self._ids


def _among(column: Any, ids: list[str], dialect: str) -> ColumnElement[bool]:
    """``column`` is one of ``ids``: one bound parameter whatever their number (a PostgreSQL
    array, hashed by the server; on SQLite a JSON list read once per statement)."""
    if dialect == "postgresql":
        return column == any_(bindparam("member_ids", ids, type_=ARRAY(String)))
    listed = text("SELECT value FROM json_each(:member_ids)").bindparams(
        bindparam("member_ids", jsonio.dumps(ids).decode(), type_=String)
    )
    return column.in_(listed.columns(value=String))  # type: ignore[no-any-return]


def _member_page(
    session: Session, s: ExportSlice, after_pk: int, limit: int, ids: list[str]
) -> Any:
    """The statement of one ``_by_members`` page: rows naming a member patient (with the
    least of them, in code point order), so only those rows' contents are read."""
    dialect = session.get_bind().dialect.name
    if s.resource_type == "Patient":
        condition: Any = _among(V.resource_id, ids, dialect)
        patient: Any = V.resource_id
    else:
        r, r2 = aliased(SearchReference), aliased(SearchReference)
        condition = exists(
            select(r.pk)
            .where(
                r.version_pk == V.pk,
                r.param == "patient",
                r.target_type == "Patient",
                _among(r.target_id, ids, dialect),
            )
            .correlate(V)  # the outer row, also from inside the per-row wrapper below
        )
        if dialect == "postgresql":
            # a per-row probe: as a semi-join PostgreSQL scans the index from the first pk
            # (or hashes every remaining row) on every page
            condition = select(literal(True)).where(condition).scalar_subquery().is_(True)
        target = r2.target_id.collate("C") if dialect == "postgresql" else r2.target_id
        patient = (
            select(func.min(target))
            .where(
                r2.version_pk == V.pk,
                r2.param == "patient",
                r2.target_type == "Patient",
                _among(r2.target_id, ids, dialect),
            )
            .scalar_subquery()
        )
    return (
        select(V.pk, V.content, patient)
        .where(*_where(s, dialect, scoped=False), condition, V.pk > after_pk)
        .order_by(V.pk)
        .limit(limit)
    )


def export_page(
    session: Session, s: ExportSlice, after_pk: int, limit: int, members: ExportMembers
) -> tuple[list[tuple[int, bytes, str | None]], int | None]:
    """The next visible rows after ``after_pk`` (at most ``limit``: pk, JSON bytes, patient
    id), and the last pk read (None: nothing left). ``members`` holds, for one export, the
    patients a payer may see."""
    dialect = session.get_bind().dialect.name
    if not _by_members(s):
        stmt = (
            select(V.pk, V.content, _patient_column(s.resource_type))
            .where(*_where(s, dialect), V.pk > after_pk)
            .order_by(V.pk)
            .limit(limit)
        )
    else:
        ids = members.ids(session, s.scope)
        if not ids:
            return [], None
        stmt = _member_page(session, s, after_pk, limit, ids)
    rows = [(pk, content, patient) for pk, content, patient in session.execute(stmt)]
    return rows, rows[-1][0] if rows else None


@dataclass(frozen=True)
class GroupMember:
    """One member of a payer's Group: a patient and one of its Coverages with that payer."""

    patient_id: str
    coverage_id: str
    status: str
    #: the Coverage's ``period`` as written (None: open)
    period: dict[str, Any] | None


def group_members(session: Session, payer_org: str) -> list[GroupMember]:
    """Every current Coverage naming ``payer_org`` as payor, with its patient and period."""
    pat, payor, status = aliased(SearchReference), aliased(SearchReference), aliased(SearchToken)
    rows = session.execute(
        select(pat.target_id, V.resource_id, status.code, V.content)
        .join(pat, and_(pat.version_pk == V.pk, pat.param == "patient"))
        .join(payor, and_(payor.version_pk == V.pk, payor.param == "payor"))
        .join(status, and_(status.version_pk == V.pk, status.param == "status"), isouter=True)
        .where(
            V.resource_type == "Coverage",
            V.superseded_by.is_(None),
            V.deleted.is_(False),
            pat.target_type == "Patient",
            payor.target_type == "Organization",
            payor.target_id == payer_org,
        )
        .order_by(pat.target_id, V.resource_id)
    ).all()
    out = []
    for pid, cid, code, content in rows:
        if pid:
            period = jsonio.loads(content).get("period")
            period = period if isinstance(period, dict) else None
            out.append(GroupMember(pid, cid, code or "unknown", period))
    return out
