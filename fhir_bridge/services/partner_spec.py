"""What a partner registration must say, checked: key, kind, base URL, events, identifiers and
auth settings (where secrets live, never the secrets), with every problem named at once."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fhir_bridge.exchange.smart import ALGORITHMS
from fhir_bridge.fhir.npi import NPI_SYSTEM, is_valid_npi
from fhir_bridge.store.outbox import EVENT_TYPES
from fhir_bridge.store.partners import AUTH_KINDS, BUNDLE_TYPES, KINDS

#: what a partner of each kind receives when no event type is named
DEFAULT_EVENTS: dict[str, tuple[str, ...]] = {
    "physician": tuple(
        e
        for e in EVENT_TYPES
        if e.startswith("referral.") or e in ("session.documented", "report.generated")
    ),
    "payer": ("session.documented",),
}
#: in a physician partner's events: poll its server for referrals (``fhir-bridge poll``)
POLL_EVENT = "poll-referrals"
#: what may appear in a partner's events: outbox event types it receives, and POLL_EVENT
PARTNER_EVENTS = (*EVENT_TYPES, POLL_EVENT)
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_SMART_OPTIONS = ("client_id", "token_url", "key_env", "key_file", "alg", "scopes", "kid")
_BEARER_OPTIONS = ("token_env", "token_file")


@dataclass(frozen=True)
class PartnerSpec:
    """A partner as the operator describes it, before validation (``None``: not given)."""

    key: str
    name: str
    kind: str
    base_url: str
    auth_kind: str
    events: Sequence[str] = ()
    identifiers: Sequence[str] = ()  # "SYSTEM|VALUE"
    token_env: str | None = None
    token_file: str | None = None
    client_id: str | None = None
    token_url: str | None = None
    key_env: str | None = None
    key_file: str | None = None
    alg: str | None = None
    scopes: Sequence[str] = ()
    kid: str | None = None
    #: poll the partner's server for referrals (adds POLL_EVENT to the events)
    poll: bool = False
    #: the most entries the partner takes in one Bundle (None: any number)
    max_bundle_entries: int | None = None
    #: transaction | batch
    bundle_type: str = "transaction"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: the field (``base_url``, ``token_env``...) and why."""

    field: str
    message: str


class PartnerInvalid(ValueError):
    """The spec cannot be registered; ``problems`` says every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class ValidPartner:
    """A validated spec as the store takes it, plus notes for the operator (never secrets)."""

    key: str
    name: str
    kind: str
    base_url: str
    events: list[str]
    identifiers: list[dict[str, str]]
    auth_kind: str
    auth: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    max_bundle_entries: int | None = None
    bundle_type: str = "transaction"


def _dedupe(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


class _Checker:
    """Collects problems and warnings while a spec is validated."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def fail(self, field_name: str, message: str) -> None:
        self.problems.append(Problem(field_name, message))

    def url(self, field_name: str, value: str, *, https_unless_loopback: bool) -> str | None:
        """An absolute http(s) URL without credentials, query or fragment; None when refused."""
        parts = urlsplit(value.strip())
        try:
            hostname = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            hostname = None
        if parts.scheme not in ("http", "https") or not hostname:
            self.fail(field_name, f"{value!r} is not an absolute http or https URL")
            return None
        if parts.username is not None or parts.password is not None:
            self.fail(field_name, "must not carry credentials (user:password@); use --auth")
            return None
        if parts.query or parts.fragment:
            self.fail(field_name, "must have no query or fragment")
            return None
        if len(value) > 1024:
            self.fail(field_name, "is longer than 1024 characters")
            return None
        if parts.scheme == "http" and hostname not in _LOOPBACK:
            if https_unless_loopback:
                self.fail(field_name, "must use https (plain http only on loopback)")
                return None
            self.warnings.append(f"{field_name} uses plain http: PHI would travel unencrypted")
        return value.strip()

    def secret_source(self, spec: PartnerSpec, kind: str) -> dict[str, str]:
        """``{kind}_env`` or ``{kind}_file`` (an absolute path to an existing file)."""
        env_field, file_field = f"{kind}_env", f"{kind}_file"
        env_name, file_name = getattr(spec, env_field), getattr(spec, file_field)
        if (env_name is None) == (file_name is None):
            self.fail(env_field, f"give exactly one of --{kind}-env or --{kind}-file")
            return {}
        if env_name is not None:
            if not ENV_NAME_PATTERN.match(env_name):
                self.fail(env_field, f"{env_name!r} is not an environment variable name")
                return {}
            if not os.environ.get(env_name):
                note = "is not set here; the delivery worker needs it"
                self.warnings.append(f"environment variable {env_name} {note}")
            return {env_field: env_name}
        path = Path(file_name).expanduser()
        if not path.is_file():
            self.fail(file_field, f"{file_name!r} is not an existing file")
            return {}
        if not os.access(path, os.R_OK):
            self.fail(file_field, f"{file_name!r} is not readable")
            return {}
        return {file_field: str(path.resolve())}


def _identifiers(check: _Checker, raw: Sequence[str]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for item in raw:
        system, sep, value = item.partition("|")
        system, value = system.strip(), value.strip()
        if not sep or not system or not value:
            check.fail("identifier", f"{item!r} is not SYSTEM|VALUE")
            continue
        if not urlsplit(system).scheme:
            check.fail("identifier", f"system {system!r} is not an absolute URI")
            continue
        if system == NPI_SYSTEM and not is_valid_npi(value):
            check.fail("identifier", f"{value!r} is not a valid NPI (10 digits, check digit)")
            continue
        entry = {"system": system, "value": value}
        if entry not in found:
            found.append(entry)
    return found


def _auth(check: _Checker, spec: PartnerSpec) -> dict[str, Any]:
    given = {
        name
        for name in (*_BEARER_OPTIONS, *_SMART_OPTIONS)
        if getattr(spec, name) not in (None, (), [])
    }
    allowed = {"none": (), "bearer": _BEARER_OPTIONS, "smart": _SMART_OPTIONS}[spec.auth_kind]
    for name in sorted(given - set(allowed)):
        check.fail(name, f"does not apply to --auth {spec.auth_kind}")
    if spec.auth_kind == "none":
        return {}
    if spec.auth_kind == "bearer":
        return check.secret_source(spec, "token")
    auth: dict[str, Any] = {}
    for name in ("client_id", "token_url", "alg"):
        value = getattr(spec, name)
        if value is None or not value.strip():
            check.fail(name, "is required with --auth smart")
    if spec.client_id and spec.client_id.strip():
        auth["client_id"] = spec.client_id.strip()
    if spec.token_url and spec.token_url.strip():
        token_url = check.url("token_url", spec.token_url, https_unless_loopback=True)
        if token_url:
            auth["token_url"] = token_url
    if spec.alg is not None and spec.alg.strip():
        if spec.alg not in ALGORITHMS:
            check.fail("alg", f"{spec.alg!r} is not supported; use one of {', '.join(ALGORITHMS)}")
        else:
            auth["alg"] = spec.alg
    scopes = _dedupe([s.strip() for s in spec.scopes])
    if not scopes:
        check.fail("scopes", "at least one is required with --auth smart (e.g. system/*.write)")
    elif any(not s or any(c.isspace() for c in s) for s in scopes):
        check.fail("scopes", "each --scope is one scope, without spaces")
    else:
        auth["scopes"] = scopes
    if spec.kid is not None:
        if spec.kid.strip():
            auth["kid"] = spec.kid.strip()
        else:
            check.fail("kid", "must not be empty")
    auth.update(check.secret_source(spec, "key"))
    return auth


def _usable(check: _Checker, auth_kind: str, auth: dict[str, Any]) -> None:
    """Build the worker's auth provider when the secret is at hand: what it refuses, we refuse.

    The secret is read and dropped; messages name its source only (``exchange.secrets``).
    """
    if auth_kind == "none":
        return
    kind = "token" if auth_kind == "bearer" else "key"
    env_name = auth.get(f"{kind}_env")
    if env_name is not None and not os.environ.get(env_name):
        return  # not set here (already a warning): the worker checks it when it starts
    from fhir_bridge.exchange.auth import AuthConfigError, partner_auth

    try:
        partner_auth(auth_kind, auth)
    except AuthConfigError as exc:
        check.fail(f"{kind}_env" if env_name is not None else f"{kind}_file", str(exc))


def _routing_notes(
    check: _Checker, kind: str, identifiers: list[dict[str, str]], payer_system: str | None
) -> None:
    """Warn when routing (``outbox.routing``) could never pick this partner."""
    if kind == "physician" and not any(i["system"] == NPI_SYSTEM for i in identifiers):
        check.warnings.append(
            f"no {NPI_SYSTEM} identifier: physicians receive events for referrals they "
            f"requested, matched by NPI"
        )
    if (
        kind == "payer"
        and payer_system
        and not any(i["system"] == payer_system for i in identifiers)
    ):
        check.warnings.append(
            f"no {payer_system} identifier: payers receive events for patients they cover, "
            f"matched by payer id"
        )


def validate(spec: PartnerSpec, *, payer_id_system: str | None = None) -> ValidPartner:
    """Check every field of ``spec``; the normalised partner, or PartnerInvalid naming all faults.

    Defaults: the events of ``DEFAULT_EVENTS`` for the kind (``poll`` adds POLL_EVENT to them
    or to the events named). File paths are stored absolute.
    With ``payer_id_system`` (the setting), a payer without such an identifier is a warning.
    """
    check = _Checker()
    key = spec.key.strip()
    if not KEY_PATTERN.match(key):
        check.fail(
            "key",
            f"{spec.key!r} must be 1-64 characters: lowercase letters, digits, '.', '_', '-', "
            f"starting with a letter or digit",
        )
    name = spec.name.strip()
    if not name:
        check.fail("name", "must not be empty")
    elif len(name) > 200:
        check.fail("name", "is longer than 200 characters")
    if spec.kind not in KINDS:
        check.fail("kind", f"{spec.kind!r} is not one of {', '.join(KINDS)}")
    base_url = check.url("base_url", spec.base_url, https_unless_loopback=False)
    events = _dedupe([e.strip() for e in spec.events])
    for event in events:
        if event not in PARTNER_EVENTS:
            check.fail("events", f"{event!r} is not one of {', '.join(PARTNER_EVENTS)}")
    if not events and spec.kind in KINDS:
        events = list(DEFAULT_EVENTS[spec.kind])
    if spec.poll and POLL_EVENT not in events:
        events.append(POLL_EVENT)
    if POLL_EVENT in events and spec.kind != "physician":
        check.fail("events", f"{POLL_EVENT}: only physician partners are polled for referrals")
    identifiers = _identifiers(check, spec.identifiers)
    _shape(check, spec.max_bundle_entries, spec.bundle_type)
    auth: dict[str, Any] = {}
    if spec.auth_kind not in AUTH_KINDS:
        check.fail("auth", f"{spec.auth_kind!r} is not one of {', '.join(AUTH_KINDS)}")
    else:
        auth = _auth(check, spec)
        if not check.problems:
            _usable(check, spec.auth_kind, auth)
    if check.problems:
        raise PartnerInvalid(check.problems)
    _routing_notes(check, spec.kind, identifiers, payer_id_system)
    assert base_url is not None
    return ValidPartner(
        key=key,
        name=name,
        kind=spec.kind,
        base_url=base_url.rstrip("/"),
        events=events,
        identifiers=identifiers,
        auth_kind=spec.auth_kind,
        auth=auth,
        warnings=check.warnings,
        max_bundle_entries=spec.max_bundle_entries,
        bundle_type=spec.bundle_type,
    )


def validate_delivery_shape(max_bundle_entries: int | None, bundle_type: str) -> None:
    """Check a partner's delivery shape alone (``partners update``); PartnerInvalid if wrong."""
    check = _Checker()
    _shape(check, max_bundle_entries, bundle_type)
    if check.problems:
        raise PartnerInvalid(check.problems)


def _shape(check: _Checker, max_bundle_entries: int | None, bundle_type: str) -> None:
    """The largest Bundle (at least 1 entry, or None: any) and the Bundle type."""
    if max_bundle_entries is not None and (
        isinstance(max_bundle_entries, bool)
        or not isinstance(max_bundle_entries, int)
        or max_bundle_entries < 1
    ):
        check.fail("max_bundle_entries", "must be a whole number of at least 1 (or unlimited)")
    if bundle_type not in BUNDLE_TYPES:
        check.fail("bundle_type", f"{bundle_type!r} is not one of {', '.join(BUNDLE_TYPES)}")
