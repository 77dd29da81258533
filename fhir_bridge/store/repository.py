"""The versioned resource store: create, update, delete, read, vread, history, identifier lookup.

Works inside the caller's SQLAlchemy session: the caller owns the transaction (see
``fhir_bridge.store.db.write_session``), so a resource write and whatever else it causes commit
together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from uuid import uuid4

from sqlalchemy import insert, select, update
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
            select(ResourceVersion)
            .join(Resource, Resource.current_version_pk == ResourceVersion.pk)
            .where(Resource.resource_type == resource_type, Resource.resource_id == resource_id)
        ).scalar_one_or_none()
        if row is None:
            raise ResourceNotFound(resource_type, resource_id)
        if row.deleted:
            raise ResourceGone(resource_type, resource_id)
        return _stored(row)

    def get(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version, or None when unknown or deleted."""
        try:
            return self.read(resource_type, resource_id)
        except (ResourceNotFound, ResourceGone):
            return None

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
            select(ResourceVersion)
            .join(Resource, Resource.current_version_pk == ResourceVersion.pk)
            .join(IdentifierClaim, IdentifierClaim.resource_pk == Resource.pk)
            .where(
                IdentifierClaim.resource_type == resource_type,
                IdentifierClaim.system == system,
                IdentifierClaim.value == value,
            )
        ).scalar_one_or_none()
        return None if row is None or row.deleted else _stored(row)

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
            select(ResourceVersion)
            .where(
                ResourceVersion.pk.in_(match),
                ResourceVersion.superseded_by.is_(None),
                ResourceVersion.deleted.is_(False),
            )
            .order_by(ResourceVersion.pk)
        ).scalars()
        return [_stored(r) for r in rows]

    def search_references(
        self, resource_type: str, param: str, reference: str
    ) -> list[StoredResource]:
        """Live resources of a type whose ``param`` references ``Type/id`` (current versions)."""
        target_type, _, target_id = reference.partition("/")
        match = select(SearchReference.version_pk).where(
            SearchReference.resource_type == resource_type,
            SearchReference.param == param,
            SearchReference.target_type == target_type,
            SearchReference.target_id == target_id,
        )
        rows = self.session.execute(
            select(ResourceVersion)
            .where(
                ResourceVersion.pk.in_(match),
                ResourceVersion.superseded_by.is_(None),
                ResourceVersion.deleted.is_(False),
            )
            .order_by(ResourceVersion.pk)
        ).scalars()
        return [_stored(r) for r in rows]

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
