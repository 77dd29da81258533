"""The partner registry: physicians' and payers' FHIR servers, as plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from fhir_bridge.store.models import Partner

KINDS = ("physician", "payer")
AUTH_KINDS = ("none", "bearer", "smart")
BUNDLE_TYPES = ("transaction", "batch")


@dataclass(frozen=True)
class PartnerRow:
    """One registered partner. ``auth`` says where secrets live, never what they are."""

    pk: int
    key: str
    name: str
    kind: str
    base_url: str
    events: tuple[str, ...]
    identifiers: tuple[dict[str, str], ...]
    auth_kind: str
    auth: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    #: the most entries the partner takes in one Bundle (None: any number)
    max_bundle_entries: int | None = None
    #: transaction | batch
    bundle_type: str = "transaction"

    def receives(self, event_type: str) -> bool:
        """True when the partner is enabled and subscribed to ``event_type``."""
        return self.enabled and event_type in self.events

    def has_identifier(self, system: str | None, value: str) -> bool:
        """True when the partner is known by this identifier (any system when None)."""
        return any(
            i.get("value") == value and (system is None or i.get("system") == system)
            for i in self.identifiers
        )


def _row(p: Partner) -> PartnerRow:
    return PartnerRow(
        pk=p.pk,
        key=p.key,
        name=p.name,
        kind=p.kind,
        base_url=p.base_url,
        events=tuple(json.loads(p.events)),
        identifiers=tuple(json.loads(p.identifiers)),
        auth_kind=p.auth_kind,
        auth=json.loads(p.auth),
        enabled=p.enabled,
        created_at=p.created_at,
        updated_at=p.updated_at,
        max_bundle_entries=p.max_bundle_entries,
        bundle_type=p.bundle_type or "transaction",
    )


class PartnerStore:
    """Repository of partners, bound to the caller's unit of work."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        *,
        key: str,
        name: str,
        kind: str,
        base_url: str,
        events: list[str],
        identifiers: list[dict[str, str]],
        auth_kind: str,
        auth: dict[str, Any],
        now: datetime,
        max_bundle_entries: int | None = None,
        bundle_type: str = "transaction",
    ) -> PartnerRow:
        """Register a partner (``key`` must be new: the unique constraint decides)."""
        _check_shape(max_bundle_entries, bundle_type)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if auth_kind not in AUTH_KINDS:
            raise ValueError(f"auth must be one of {', '.join(AUTH_KINDS)}")
        self.session.execute(
            insert(Partner).values(
                key=key,
                name=name,
                kind=kind,
                base_url=base_url.rstrip("/"),
                events=json.dumps(list(events)),
                identifiers=json.dumps(list(identifiers)),
                auth_kind=auth_kind,
                auth=json.dumps(auth, sort_keys=True),
                enabled=True,
                max_bundle_entries=max_bundle_entries,
                bundle_type=bundle_type,
                created_at=now,
                updated_at=now,
            )
        )
        found = self.get(key)
        assert found is not None
        return found

    def get(self, key: str) -> PartnerRow | None:
        """The partner with this key."""
        found = self.session.execute(select(Partner).where(Partner.key == key)).scalar_one_or_none()
        return None if found is None else _row(found)

    def by_pk(self, pk: int) -> PartnerRow | None:
        """The partner with this row id."""
        found = self.session.get(Partner, pk)
        return None if found is None else _row(found)

    def all(self) -> list[PartnerRow]:
        """Every partner, enabled or not, by key."""
        return [
            _row(p) for p in self.session.execute(select(Partner).order_by(Partner.key)).scalars()
        ]

    def enabled(self) -> list[PartnerRow]:
        """Partners that receive deliveries."""
        return [p for p in self.all() if p.enabled]

    def set_delivery_shape(
        self, key: str, *, max_bundle_entries: int | None, bundle_type: str, now: datetime
    ) -> bool:
        """Set the largest Bundle the partner takes and its type; False when no such key."""
        _check_shape(max_bundle_entries, bundle_type)
        result = self.session.execute(
            update(Partner)
            .where(Partner.key == key)
            .values(max_bundle_entries=max_bundle_entries, bundle_type=bundle_type, updated_at=now)
        )
        return bool(result.rowcount)

    def set_enabled(self, key: str, enabled: bool, *, now: datetime) -> bool:
        """Enable or disable a partner; False when no such key."""
        result = self.session.execute(
            update(Partner).where(Partner.key == key).values(enabled=enabled, updated_at=now)
        )
        return bool(result.rowcount)


def _check_shape(max_bundle_entries: int | None, bundle_type: str) -> None:
    if bundle_type not in BUNDLE_TYPES:
        raise ValueError(f"bundle type must be one of {', '.join(BUNDLE_TYPES)}")
    if max_bundle_entries is not None and max_bundle_entries < 1:
        raise ValueError("max bundle entries must be at least 1")
