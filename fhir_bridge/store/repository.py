"""The versioned resource store: create, update, delete, read, vread, history, identifier lookup.

Works inside the caller's SQLAlchemy session: the caller owns the transaction (see
``fhir_bridge.store.db.write_session``), so a resource write and whatever else it causes commit
together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from uuid import uuid4

from sqlalchemy import Row, bindparam, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.dates import to_instant
from fhir_bridge.fhir.search_index import extract_index
from fhir_bridge.store.errors import (
    DuplicateIdentifier,
    ResourceGone,
    ResourceNotFound,
    VersionConflict,
)
from fhir_bridge.store.models import (
    IdentifierClaim,
    InboundPayload,
    Resource,
    ResourceVersion,
    SearchDate,
    SearchReference,
    SearchString,
    SearchToken,
)
from fhir_bridge.store.snapshot import hold_write_lock


def utcnow() -> datetime:
    """Current time as naive UTC (the store's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class StoredResource:
    """One stored version: identity, version metadata and the JSON bytes as served."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: bytes
    version_pk: int

    @cached_property
    def resource(self) -> dict[str, Any]:
        """The resource as a dict (decimals kept exact)."""
        return jsonio.loads(self.content)

    @property
    def etag(self) -> str:
        """Weak ETag carrying the version id, as FHIR prescribes."""
        return f'W/"{self.version_id}"'

    @property
    def reference(self) -> str:
        """Relative literal reference ``Type/id``."""
        return f"{self.resource_type}/{self.resource_id}"


def _stored(row: ResourceVersion) -> StoredResource:
    return StoredResource(
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        version_id=row.version_id,
        last_updated=row.last_updated,
        deleted=row.deleted,
        content=row.content,
        version_pk=row.pk,
    )


_VERSION_COLUMNS = (
    ResourceVersion.resource_type,
    ResourceVersion.resource_id,
    ResourceVersion.version_id,
    ResourceVersion.last_updated,
    ResourceVersion.deleted,
    ResourceVersion.content,
    ResourceVersion.pk,
)

_versions = ResourceVersion.__table__.c
#: the previous current version of a resource now points at its successor
_SUPERSEDE = (
    update(ResourceVersion.__table__)
    .where(
        _versions.resource_pk == bindparam("rpk"),
        _versions.superseded_by.is_(None),
        _versions.pk != bindparam("vpk"),
    )
    .values(superseded_by=bindparam("vpk"))
)
#: a resource row now names its newest version
_SET_CURRENT = (
    update(Resource.__table__)
    .where(Resource.__table__.c.pk == bindparam("rpk"))
    .values(
        version_id=bindparam("ver"),
        current_version_pk=bindparam("vpk"),
        last_updated=bindparam("at"),
        deleted=False,
    )
)


#: the current version of one resource (built once: constructing a select costs more than
#: running it against an index)
_READ_CURRENT = (
    select(*_VERSION_COLUMNS)
    .join(Resource, Resource.current_version_pk == ResourceVersion.pk)
    .where(
        Resource.resource_type == bindparam("resource_type"),
        Resource.resource_id == bindparam("resource_id"),
    )
)
#: the current versions of resources of some types with some ids. Not a row-value
#: ``(type, id) IN (...)``: SQLite answers that with a scan of every resource, where two
#: plain INs walk the (type, id) index (the caller drops the pairs it did not ask for).
_READ_CURRENT_MANY = (
    select(*_VERSION_COLUMNS)
    .join(Resource, Resource.current_version_pk == ResourceVersion.pk)
    .where(
        Resource.resource_type.in_(bindparam("types", expanding=True)),
        Resource.resource_id.in_(bindparam("ids", expanding=True)),
    )
)


def _stored_row(row: Row[Any]) -> StoredResource:
    """A StoredResource from a row of ``_VERSION_COLUMNS``."""
    return StoredResource(*row)


def _without_meta_versioning(resource: dict[str, Any]) -> dict[str, Any]:
    body = dict(resource)
    meta = dict(body.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    return body


def _with_meta(
    resource: dict[str, Any], resource_id: str, version: int, at: datetime
) -> dict[str, Any]:
    """The resource with id and meta.versionId/lastUpdated set, resourceType/id/meta first."""
    meta = {
        k: v
        for k, v in (resource.get("meta") or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    return {
        "resourceType": resource["resourceType"],
        "id": resource_id,
        "meta": {"versionId": str(version), "lastUpdated": to_instant(at), **meta},
        **rest,
    }


class ResourceStore:
    """Repository over the resource tables, bound to one session (one unit of work)."""

    def __init__(self, session: Session, *, now: Callable[[], datetime] = utcnow) -> None:
        self.session = session
        self._now = now

    # ----------------------------------------------------------------- reads
    def read(self, resource_type: str, resource_id: str) -> StoredResource:
        """The current version; raises ResourceNotFound, or ResourceGone if deleted."""
        row = self.session.execute(
            _READ_CURRENT, {"resource_type": resource_type, "resource_id": resource_id}
        ).one_or_none()
        if row is None:
            raise ResourceNotFound(resource_type, resource_id)
        if row.deleted:
            raise ResourceGone(resource_type, resource_id)
        return _stored_row(row)

    def get(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version, or None when unknown or deleted."""
        try:
            return self.read(resource_type, resource_id)
        except (ResourceNotFound, ResourceGone):
            return None

    def get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], StoredResource]:
        """The current versions of the (type, id) ``keys`` on file and not deleted, in one
        query; keys not on file are absent from the answer."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        asked = set(wanted)
        rows = self.session.execute(
            _READ_CURRENT_MANY,
            {"types": sorted({t for t, _ in asked}), "ids": sorted({i for _, i in asked})},
        )
        return {
            (r.resource_type, r.resource_id): _stored_row(r)
            for r in rows
            if not r.deleted and (r.resource_type, r.resource_id) in asked
        }

    def vread(self, resource_type: str, resource_id: str, version_id: int) -> StoredResource:
        """One specific version; a deleted version answers ResourceGone."""
        row = self.session.execute(
            select(ResourceVersion).where(
                ResourceVersion.resource_type == resource_type,
                ResourceVersion.resource_id == resource_id,
                ResourceVersion.version_id == version_id,
            )
        ).scalar_one_or_none()
        if row is None:
            raise ResourceNotFound(resource_type, resource_id, version_id)
        if row.deleted:
            raise ResourceGone(resource_type, resource_id)
        return _stored(row)

    def history(self, resource_type: str, resource_id: str) -> list[StoredResource]:
        """Every version, newest first; raises ResourceNotFound for an unknown resource."""
        rows = self.session.execute(
            select(ResourceVersion)
            .where(
                ResourceVersion.resource_type == resource_type,
                ResourceVersion.resource_id == resource_id,
            )
            .order_by(ResourceVersion.version_id.desc())
        ).scalars()
        versions = [_stored(r) for r in rows]
        if not versions:
            raise ResourceNotFound(resource_type, resource_id)
        return versions

    def find_by_identifier(
        self, resource_type: str, system: str, value: str
    ) -> StoredResource | None:
        """The live resource owning a claimed business identifier, if any."""
        row = self.session.execute(
            select(*_VERSION_COLUMNS)
            .join(Resource, Resource.current_version_pk == ResourceVersion.pk)
            .join(IdentifierClaim, IdentifierClaim.resource_pk == Resource.pk)
            .where(
                IdentifierClaim.resource_type == resource_type,
                IdentifierClaim.system == system,
                IdentifierClaim.value == value,
            )
        ).one_or_none()
        return None if row is None or row.deleted else _stored_row(row)

    def search_by_identifier(
        self, resource_type: str, system: str | None, value: str, *, param: str = "identifier"
    ) -> list[StoredResource]:
        """Live resources of a type carrying the identifier (any system when ``system`` is None)."""
        match = select(SearchToken.version_pk).where(
            SearchToken.resource_type == resource_type,
            SearchToken.param == param,
            SearchToken.code == value,
        )
        if system is not None:
            match = match.where(SearchToken.system == system)
        rows = self.session.execute(
            select(*_VERSION_COLUMNS)
            .where(
                ResourceVersion.pk.in_(match),
                ResourceVersion.superseded_by.is_(None),
                ResourceVersion.deleted.is_(False),
            )
            .order_by(ResourceVersion.pk)
        )
        return [_stored_row(r) for r in rows]

    def search_references(
        self, resource_type: str, param: str, reference: str
    ) -> list[StoredResource]:
        """Live resources of a type whose ``param`` references ``Type/id`` (current versions)."""
        return self.referencing_many(resource_type, param, [reference]).get(reference, [])

    def referencing_many(
        self, resource_type: str, param: str, references: Iterable[str]
    ) -> dict[str, list[StoredResource]]:
        """``search_references`` for several ``Type/id`` targets in one query: each target's
        referencing resources in pk order (targets nothing references are absent)."""
        targets = {tuple(r.partition("/")[::2]) for r in references}
        if not targets:
            return {}
        rows = self.session.execute(
            select(*_VERSION_COLUMNS, SearchReference.target_type, SearchReference.target_id)
            .join(SearchReference, SearchReference.version_pk == ResourceVersion.pk)
            .where(
                SearchReference.resource_type == resource_type,
                SearchReference.param == param,
                SearchReference.target_type.in_(sorted({t for t, _ in targets})),
                SearchReference.target_id.in_(sorted({i for _, i in targets})),
                ResourceVersion.superseded_by.is_(None),
                ResourceVersion.deleted.is_(False),
            )
            .order_by(ResourceVersion.pk)
        )
        found: dict[str, list[StoredResource]] = {}
        seen: set[tuple[str, int]] = set()  # a resource naming one target twice counts once
        for row in rows:
            *version, target_type, target_id = row
            reference = f"{target_type}/{target_id}"
            if (target_type, target_id) not in targets or (reference, row.pk) in seen:
                continue
            seen.add((reference, row.pk))
            found.setdefault(reference, []).append(StoredResource(*version))
        return found

    # ---------------------------------------------------------------- writes
    def create(
        self,
        resource: dict[str, Any],
        *,
        resource_id: str | None = None,
        claim_identifiers: Iterable[tuple[str, str]] = (),
    ) -> StoredResource:
        """Store a new resource as version 1.

        ``claim_identifiers`` are (system, value) pairs this resource owns; if another live
        resource of the type already owns one, nothing is written and DuplicateIdentifier
        (carrying the existing resource) is raised. The database's unique constraint decides,
        so concurrent creates of the same business identity cannot both succeed.
        """
        resource_type = resource["resourceType"]
        resource_id = resource_id or str(uuid4())
        claims = list(dict.fromkeys(claim_identifiers))
        hold_write_lock(self.session)
        at = self._now()
        try:
            with self.session.begin_nested():
                res_pk = self.session.execute(
                    insert(Resource)
                    .values(
                        resource_type=resource_type,
                        resource_id=resource_id,
                        version_id=1,
                        current_version_pk=0,
                        last_updated=at,
                        deleted=False,
                    )
                    .returning(Resource.pk)
                ).scalar_one()
                for system, value in claims:
                    self.session.execute(
                        insert(IdentifierClaim).values(
                            resource_type=resource_type,
                            system=system,
                            value=value,
                            resource_pk=res_pk,
                        )
                    )
                stored = self._append_version(res_pk, resource, resource_id, 1, at, "POST")
        except IntegrityError:
            for system, value in claims:
                existing = self.find_by_identifier(resource_type, system, value)
                if existing is not None:
                    raise DuplicateIdentifier(resource_type, system, existing) from None
            raise
        return stored

    def bulk_create(self, resources: list[dict[str, Any]]) -> int:
        """Insert many new resources (each with an ``id``) as version 1 in a few statements.

        For loading generated or migrated data: no identifier claims, no duplicate check
        beyond the (type, id) unique constraint. Returns the number stored.
        """
        if not resources:
            return 0
        hold_write_lock(self.session)
        at = self._now()
        res_pks = self.session.scalars(
            insert(Resource).returning(Resource.pk, sort_by_parameter_order=True),
            [
                {
                    "resource_type": r["resourceType"],
                    "resource_id": r["id"],
                    "version_id": 1,
                    "current_version_pk": 0,
                    "last_updated": at,
                    "deleted": False,
                }
                for r in resources
            ],
        ).all()
        bodies = [_with_meta(r, r["id"], 1, at) for r in resources]
        version_pks = self.session.scalars(
            insert(ResourceVersion).returning(ResourceVersion.pk, sort_by_parameter_order=True),
            [
                {
                    "resource_pk": res_pk,
                    "resource_type": body["resourceType"],
                    "resource_id": body["id"],
                    "version_id": 1,
                    "last_updated": at,
                    "superseded_by": None,
                    "deleted": False,
                    "method": "POST",
                    "content": jsonio.dumps(body),
                }
                for res_pk, body in zip(res_pks, bodies, strict=True)
            ],
        ).all()
        self.session.execute(
            update(Resource),
            [
                {"pk": rp, "current_version_pk": vp}
                for rp, vp in zip(res_pks, version_pks, strict=True)
            ],
        )
        self._index_many(zip(version_pks, bodies, strict=True))
        return len(resources)

    def update(
        self,
        resource: dict[str, Any],
        *,
        expected_version: int | None = None,
        claim_identifiers: Iterable[tuple[str, str]] = (),
    ) -> tuple[StoredResource, bool]:
        """Store a new version of ``resource`` (its ``id`` names it); create it if unknown.

        Returns (stored, created). An update whose content equals the current version (ignoring
        meta.versionId/lastUpdated) writes nothing and returns the current version, so retries
        are free. ``expected_version`` enables optimistic locking (VersionConflict).
        """
        resource_type, resource_id = resource["resourceType"], resource["id"]
        hold_write_lock(self.session)
        current = self.session.execute(
            select(Resource)
            .where(Resource.resource_type == resource_type, Resource.resource_id == resource_id)
            .with_for_update()
        ).scalar_one_or_none()
        if current is None:
            if expected_version is not None:
                raise ResourceNotFound(resource_type, resource_id)
            stored = self.create(
                resource, resource_id=resource_id, claim_identifiers=claim_identifiers
            )
            return stored, True
        if expected_version is not None and expected_version != current.version_id:
            raise VersionConflict(resource_type, resource_id, expected_version, current.version_id)
        previous = self.session.get(ResourceVersion, current.current_version_pk)
        assert previous is not None
        if not previous.deleted and _without_meta_versioning(
            jsonio.loads(previous.content)
        ) == _without_meta_versioning(resource):
            return _stored(previous), False
        self._claim_more(current.pk, resource_type, claim_identifiers)
        at = max(self._now(), current.last_updated + timedelta(microseconds=1))
        stored = self._append_version(
            current.pk, resource, resource_id, current.version_id + 1, at, "PUT"
        )
        return stored, False

    def update_many(
        self, items: Sequence[tuple[dict[str, Any], Iterable[tuple[str, str]]]]
    ) -> list[tuple[StoredResource, bool]]:
        """``update(resource, claim_identifiers=claims)`` for each item, in a few statements.

        Same outcome as the calls one after another (versions, timestamps, claims, version pk
        order, DuplicateIdentifier), but all or nothing: after an exception the caller rolls
        back. Falls back to one call per item when two items name the same resource or claim.
        """
        claims_of = [list(dict.fromkeys(claims)) for _, claims in items]
        keys = [(r["resourceType"], r["id"]) for r, _ in items]
        claimed = [(t, c) for (t, _), cs in zip(keys, claims_of, strict=True) for c in cs]
        if len(set(keys)) < len(keys) or len(set(claimed)) < len(claimed):
            return [
                self.update(r, claim_identifiers=c)
                for (r, _), c in zip(items, claims_of, strict=True)
            ]
        if not items:
            return []
        hold_write_lock(self.session)
        # rows of the resources on file, locked in pk order (a consistent order across writers)
        current = {
            (row.resource_type, row.resource_id): row
            for row in self.session.execute(
                select(
                    Resource.pk,
                    Resource.resource_type,
                    Resource.resource_id,
                    Resource.version_id,
                    Resource.current_version_pk,
                    Resource.last_updated,
                )
                .where(tuple_(Resource.resource_type, Resource.resource_id).in_(keys))
                .order_by(Resource.pk)
                .with_for_update()
            )
        }
        previous: dict[int, StoredResource] = {}
        if current:
            previous = {
                s.version_pk: s
                for s in map(
                    _stored_row,
                    self.session.execute(
                        select(*_VERSION_COLUMNS).where(
                            ResourceVersion.pk.in_([r.current_version_pk for r in current.values()])
                        )
                    ),
                )
            }
        # decide per item, in order: unchanged, new version of a resource on file, or create
        results: list[tuple[StoredResource, bool] | None] = [None] * len(items)
        changed: list[tuple[int, Any, StoredResource]] = []  # (item index, row, previous)
        fresh: list[int] = []
        for i, key in enumerate(keys):
            row = current.get(key)
            if row is None:
                fresh.append(i)
                continue
            before = previous[row.current_version_pk]
            if not before.deleted and _without_meta_versioning(
                before.resource
            ) == _without_meta_versioning(items[i][0]):
                results[i] = (before, False)
            else:
                changed.append((i, row, before))
        if changed:
            self._claim_more_many([(row.pk, keys[i][0], claims_of[i]) for i, row, _ in changed])
        superseding = {i for i, _, _ in changed}
        version_of = {i: row.version_id + 1 for i, row, _ in changed}
        order = sorted([*fresh, *superseding])
        if not order:
            return [r for r in results if r is not None]
        at_of: dict[int, datetime] = {}
        for i in order:  # the clock is read once per write, in item order
            if i in superseding:
                last = current[keys[i]].last_updated
                at_of[i] = max(self._now(), last + timedelta(microseconds=1))
            else:
                at_of[i] = self._now()
        new_pks = self._insert_resources([(keys[i], claims_of[i], at_of[i]) for i in fresh])
        # versions in item order, so version pks come out as the calls one by one give them
        resource_pk_of = dict(zip(fresh, new_pks, strict=True))
        resource_pk_of.update({i: row.pk for i, row, _ in changed})
        bodies = {
            i: _with_meta(items[i][0], keys[i][1], version_of.get(i, 1), at_of[i]) for i in order
        }
        contents = {i: jsonio.dumps(bodies[i]) for i in order}
        version_pks = self.session.scalars(
            insert(ResourceVersion).returning(ResourceVersion.pk, sort_by_parameter_order=True),
            [
                {
                    "resource_pk": resource_pk_of[i],
                    "resource_type": keys[i][0],
                    "resource_id": keys[i][1],
                    "version_id": version_of.get(i, 1),
                    "last_updated": at_of[i],
                    "superseded_by": None,
                    "deleted": False,
                    "method": "PUT" if i in superseding else "POST",
                    "content": contents[i],
                }
                for i in order
            ],
        ).all()
        pk_of = dict(zip(order, version_pks, strict=True))
        if superseding:
            self.session.execute(
                _SUPERSEDE,
                [{"rpk": resource_pk_of[i], "vpk": pk_of[i]} for i in order if i in superseding],
            )
        self.session.execute(
            _SET_CURRENT,
            [
                {
                    "rpk": resource_pk_of[i],
                    "ver": version_of.get(i, 1),
                    "vpk": pk_of[i],
                    "at": at_of[i],
                }
                for i in order
            ],
        )
        self._index_many((pk_of[i], bodies[i]) for i in order)
        for i in order:
            stored = StoredResource(
                keys[i][0], keys[i][1], version_of.get(i, 1), at_of[i], False, contents[i], pk_of[i]
            )
            results[i] = (stored, i not in superseding)
        done = [r for r in results if r is not None]
        assert len(done) == len(items)
        return done

    def _insert_resources(
        self, new: list[tuple[tuple[str, str], list[tuple[str, str]], datetime]]
    ) -> list[int]:
        """Insert resource rows (no current version yet) and their claims; their pks in order.

        A claim another resource owns, or a (type, id) on file, raises DuplicateIdentifier or
        IntegrityError as ``create`` would, for the first item in order that collides.
        """
        if not new:
            return []
        try:
            with self.session.begin_nested():
                pks = self.session.scalars(
                    insert(Resource).returning(Resource.pk, sort_by_parameter_order=True),
                    [
                        {
                            "resource_type": rt,
                            "resource_id": rid,
                            "version_id": 1,
                            "current_version_pk": 0,
                            "last_updated": at,
                            "deleted": False,
                        }
                        for (rt, rid), _, at in new
                    ],
                ).all()
                claims = [
                    {"resource_type": rt, "system": s, "value": v, "resource_pk": pk}
                    for ((rt, _), cs, _), pk in zip(new, pks, strict=True)
                    for s, v in cs
                ]
                if claims:
                    self.session.execute(insert(IdentifierClaim.__table__), claims)
        except IntegrityError:
            for (resource_type, _), cs, _ in new:
                for system, value in cs:
                    existing = self.find_by_identifier(resource_type, system, value)
                    if existing is not None:
                        raise DuplicateIdentifier(resource_type, system, existing) from None
            raise
        return list(pks)

    def _claim_more_many(self, items: list[tuple[int, str, list[tuple[str, str]]]]) -> None:
        """``_claim_more`` for several resources on file, with one look-up of their claims."""
        wanted = [(pk, rt, cs) for pk, rt, cs in items if cs]
        if not wanted:
            return
        owned = {
            tuple(row)
            for row in self.session.execute(
                select(
                    IdentifierClaim.resource_pk, IdentifierClaim.system, IdentifierClaim.value
                ).where(IdentifierClaim.resource_pk.in_([pk for pk, _, _ in wanted]))
            )
        }
        for resource_pk, resource_type, claims in wanted:
            for system, value in claims:
                if (resource_pk, system, value) in owned:
                    continue
                existing = self.find_by_identifier(resource_type, system, value)
                if existing is not None:
                    raise DuplicateIdentifier(resource_type, system, existing)
                self.session.execute(
                    insert(IdentifierClaim).values(
                        resource_type=resource_type,
                        system=system,
                        value=value,
                        resource_pk=resource_pk,
                    )
                )

    def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """Mark a resource deleted (a new, empty version); None when it was unknown or deleted."""
        hold_write_lock(self.session)
        current = self.session.execute(
            select(Resource)
            .where(Resource.resource_type == resource_type, Resource.resource_id == resource_id)
            .with_for_update()
        ).scalar_one_or_none()
        if current is None or current.deleted:
            return None
        at = max(self._now(), current.last_updated + timedelta(microseconds=1))
        version = current.version_id + 1
        tombstone = {"resourceType": resource_type, "id": resource_id}
        content = jsonio.dumps(_with_meta(tombstone, resource_id, version, at))
        version_pk = self._insert_version(
            current.pk, resource_type, resource_id, version, at, "DELETE", content, deleted=True
        )
        self.session.execute(
            IdentifierClaim.__table__.delete().where(IdentifierClaim.resource_pk == current.pk)
        )
        return StoredResource(resource_type, resource_id, version, at, True, content, version_pk)

    def keep_inbound(
        self,
        *,
        body: bytes,
        channel: str,
        method: str,
        path: str,
        content_type: str | None,
        request_id: str | None,
        sha256: str,
    ) -> int:
        """Keep a request body byte for byte; returns its row id for later linking."""
        return self.session.execute(
            insert(InboundPayload)
            .values(
                received_at=self._now(),
                request_id=request_id,
                channel=channel,
                method=method,
                path=path[:2048],
                content_type=content_type,
                sha256=sha256,
                body=body,
            )
            .returning(InboundPayload.pk)
        ).scalar_one()

    # --------------------------------------------------------------- helpers
    def _claim_more(
        self, resource_pk: int, resource_type: str, claims: Iterable[tuple[str, str]]
    ) -> None:
        rows = self.session.execute(
            select(IdentifierClaim.system, IdentifierClaim.value).where(
                IdentifierClaim.resource_pk == resource_pk
            )
        ).all()
        owned = {(system, value) for system, value in rows}
        for system, value in dict.fromkeys(claims):
            if (system, value) in owned:
                continue
            existing = self.find_by_identifier(resource_type, system, value)
            if existing is not None:
                raise DuplicateIdentifier(resource_type, system, existing)
            self.session.execute(
                insert(IdentifierClaim).values(
                    resource_type=resource_type, system=system, value=value, resource_pk=resource_pk
                )
            )

    def _append_version(
        self,
        resource_pk: int,
        resource: dict[str, Any],
        resource_id: str,
        version: int,
        at: datetime,
        method: str,
    ) -> StoredResource:
        body = _with_meta(resource, resource_id, version, at)
        content = jsonio.dumps(body)
        resource_type = body["resourceType"]
        version_pk = self._insert_version(
            resource_pk, resource_type, resource_id, version, at, method, content
        )
        self._index(version_pk, resource_type, body)
        return StoredResource(resource_type, resource_id, version, at, False, content, version_pk)

    def _insert_version(
        self,
        resource_pk: int,
        resource_type: str,
        resource_id: str,
        version: int,
        at: datetime,
        method: str,
        content: bytes,
        *,
        deleted: bool = False,
    ) -> int:
        version_pk = self.session.execute(
            insert(ResourceVersion)
            .values(
                resource_pk=resource_pk,
                resource_type=resource_type,
                resource_id=resource_id,
                version_id=version,
                last_updated=at,
                superseded_by=None,
                deleted=deleted,
                method=method,
                content=content,
            )
            .returning(ResourceVersion.pk)
        ).scalar_one()
        if version > 1:  # version 1 of a resource inserted just now has no predecessor
            self.session.execute(
                update(ResourceVersion)
                .where(
                    ResourceVersion.resource_pk == resource_pk,
                    ResourceVersion.superseded_by.is_(None),
                    ResourceVersion.pk != version_pk,
                )
                .values(superseded_by=version_pk)
            )
        self.session.execute(
            update(Resource)
            .where(Resource.pk == resource_pk)
            .values(
                version_id=version, current_version_pk=version_pk, last_updated=at, deleted=deleted
            )
        )
        return version_pk

    def _index(self, version_pk: int, resource_type: str, body: dict[str, Any]) -> None:
        self._index_many([(version_pk, body)])

    def _index_many(self, versions: Iterable[tuple[int, dict[str, Any]]]) -> None:
        tokens: list[dict[str, Any]] = []
        references: list[dict[str, Any]] = []
        dates: list[dict[str, Any]] = []
        strings: list[dict[str, Any]] = []
        for version_pk, body in versions:
            entries = extract_index(body)
            common = {"version_pk": version_pk, "resource_type": body["resourceType"]}
            tokens.extend(
                {**common, "param": t.param, "system": t.system, "code": t.code, "text": t.text}
                for t in entries.tokens
            )
            references.extend(
                {
                    **common,
                    "param": r.param,
                    "target_type": r.target_type,
                    "target_id": r.target_id,
                    "reference": r.reference[:1024],
                }
                for r in entries.references
            )
            dates.extend(
                {**common, "param": d.param, "low": d.low, "high": d.high} for d in entries.dates
            )
            strings.extend(
                {
                    **common,
                    "param": x.param,
                    "normalized": x.normalized[:1024],
                    "exact": x.exact[:1024],
                }
                for x in entries.strings
            )
        for table, rows in (
            (SearchToken, tokens),
            (SearchReference, references),
            (SearchDate, dates),
            (SearchString, strings),
        ):
            if rows:
                # Core insert: the ORM form drops None-valued keys and splits the batch into
                # many small statements (measured: 2x slower on SQLite, 3x on PostgreSQL).
                self.session.execute(insert(table.__table__), rows)
