"""The partner registry's use cases: register (validated), list, show, enable and disable.

A partner's auth settings name where a secret lives (an environment variable or a file),
never the secret itself. ``partner_view`` is the only shape that leaves the bridge (CLI ``show``
and ``/api/v1/partners``): it is built from an allow-list, so it shows the auth kind and the
SMART client id, token URL, algorithm, key id and scopes, and never where the token or key
lives, let alone its value.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from fhir_bridge.services.partner_spec import DEFAULT_EVENTS as DEFAULT_EVENTS
from fhir_bridge.services.partner_spec import PARTNER_EVENTS as PARTNER_EVENTS
from fhir_bridge.services.partner_spec import POLL_EVENT as POLL_EVENT
from fhir_bridge.services.partner_spec import PartnerInvalid as PartnerInvalid
from fhir_bridge.services.partner_spec import PartnerSpec as PartnerSpec
from fhir_bridge.services.partner_spec import Problem as Problem
from fhir_bridge.services.partner_spec import ValidPartner, validate_delivery_shape
from fhir_bridge.services.partner_spec import validate as validate
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.partners import PartnerRow, PartnerStore

log = logging.getLogger(__name__)

#: the only auth settings a view may show (an allow-list: where secrets live is never shown)
SHOWN_AUTH_SETTINGS = ("client_id", "token_url", "alg", "kid", "scopes")


class PartnerExists(Exception):
    """A partner with that key is already registered."""

    def __init__(self, key: str) -> None:
        super().__init__(f"a partner with key {key!r} already exists")
        self.key = key


class UnknownPartner(LookupError):
    """No partner with that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no partner with key {key!r}")
        self.key = key


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def add_partner(runtime: Runtime, partner: ValidPartner) -> PartnerRow:
    """Register a validated partner in one transaction; PartnerExists when the key is taken."""
    try:
        with write_session(runtime.sessions) as session:
            store = PartnerStore(session)
            if store.get(partner.key) is not None:
                raise PartnerExists(partner.key)
            row = store.add(
                key=partner.key,
                name=partner.name,
                kind=partner.kind,
                base_url=partner.base_url,
                events=partner.events,
                identifiers=partner.identifiers,
                auth_kind=partner.auth_kind,
                auth=partner.auth,
                now=_now(),
                max_bundle_entries=partner.max_bundle_entries,
                bundle_type=partner.bundle_type,
            )
    except IntegrityError:  # a concurrent add of the same key won the race
        raise PartnerExists(partner.key) from None
    log.info(
        "partner added",
        extra={"partner": row.key, "kind": row.kind, "auth_kind": row.auth_kind},
    )
    return row


def list_partners(runtime: Runtime) -> list[PartnerRow]:
    """Every partner, enabled or not, by key."""
    with read_session(runtime.sessions) as session:
        return PartnerStore(session).all()


def find_partner(runtime: Runtime, key: str) -> PartnerRow | None:
    """The partner with this key, if any."""
    with read_session(runtime.sessions) as session:
        return PartnerStore(session).get(key)


def set_delivery_shape(
    runtime: Runtime, key: str, *, max_bundle_entries: int | None, bundle_type: str
) -> PartnerRow:
    """Set the largest Bundle partner ``key`` takes and whether it wants transaction or batch
    (PartnerInvalid, UnknownPartner); deliveries not yet sent take the new shape."""
    validate_delivery_shape(max_bundle_entries, bundle_type)
    with write_session(runtime.sessions) as session:
        store = PartnerStore(session)
        if not store.set_delivery_shape(
            key, max_bundle_entries=max_bundle_entries, bundle_type=bundle_type, now=_now()
        ):
            raise UnknownPartner(key)
        after = store.get(key)
    assert after is not None
    log.info("partner delivery shape set", extra={"partner": key})
    return after


def set_enabled(runtime: Runtime, key: str, enabled: bool) -> tuple[PartnerRow, bool]:
    """Enable or disable a partner: (the partner now, whether it changed); UnknownPartner."""
    with write_session(runtime.sessions) as session:
        store = PartnerStore(session)
        before = store.get(key)
        if before is None:
            raise UnknownPartner(key)
        if before.enabled == enabled:
            return before, False
        store.set_enabled(key, enabled, now=_now())
        after = store.get(key)
    assert after is not None
    log.info(
        "partner enabled" if enabled else "partner disabled",
        extra={"partner": key},
    )
    return after, True


def _time(value: datetime) -> str:
    return value.isoformat(timespec="seconds") + "Z"


def auth_view(auth_kind: str, auth: dict[str, Any]) -> dict[str, Any]:
    """The auth kind and the allow-listed, non-secret settings (never where secrets live)."""
    view: dict[str, Any] = {"kind": auth_kind}
    for name in SHOWN_AUTH_SETTINGS:
        if name in auth:
            view[name] = list(auth[name]) if name == "scopes" else auth[name]
    return view


def partner_view(p: PartnerRow) -> dict[str, Any]:
    """The safe view of a partner, shared by the CLI (``show``) and the API."""
    return {
        "key": p.key,
        "name": p.name,
        "kind": p.kind,
        "base_url": p.base_url,
        "events": list(p.events),
        "identifiers": [
            {"system": i.get("system"), "value": i.get("value")} for i in p.identifiers
        ],
        "auth": auth_view(p.auth_kind, p.auth),
        "delivery": {"max_bundle_entries": p.max_bundle_entries, "bundle_type": p.bundle_type},
        "enabled": p.enabled,
        "created_at": _time(p.created_at),
        "updated_at": _time(p.updated_at),
    }
