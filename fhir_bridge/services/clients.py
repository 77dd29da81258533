"""Registering the FHIR API's system clients: validation apart from the CLI that calls it."""

from __future__ import annotations

import json
import re
from datetime import datetime

from fhir_bridge.fhir.npi import is_valid_npi
from fhir_bridge.security.principal import ROLES
from fhir_bridge.security.scopes import parse_scope
from fhir_bridge.security.tokens import parse_jwks
from fhir_bridge.services.authorization import utcnow
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.clients import ClientExists as ClientExists
from fhir_bridge.store.clients import ClientRow, ClientStore
from fhir_bridge.store.db import read_session, write_session

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{3,128}$")
_ORGANIZATION = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")
#: what each role may be granted unless told otherwise
DEFAULT_SCOPES = {
    "payer": "system/*.rs system/Task.cru",
    "ehr": "system/*.rs system/*.cu",
    "clinic": "system/*.cruds",
    "admin": "system/*.cruds",
}


class ClientSpecError(ValueError):
    """A client registration that cannot be accepted; the message names the option."""


def validate(
    *,
    client_id: str,
    role: str,
    organization: str | None,
    scopes: str | None,
    jwks_text: str | None,
    jwks_url: str | None,
) -> tuple[str, dict | None]:
    """Checked scopes and JWKS of a registration; ClientSpecError naming what is wrong."""
    if not _CLIENT_ID.match(client_id):
        raise ClientSpecError("CLIENT_ID: 3-128 characters of letters, digits, . _ ~ -")
    if role not in ROLES:
        raise ClientSpecError(f"--role: one of {', '.join(ROLES)}")
    if role in ("payer", "ehr"):
        if not organization or not _ORGANIZATION.match(organization):
            raise ClientSpecError(f"--organization: a {role} client acts for Organization/<id>")
    elif organization:
        raise ClientSpecError("--organization: only ehr and payer clients act for one")
    scope_text = scopes if scopes else DEFAULT_SCOPES[role]
    bad = [s for s in scope_text.split() if parse_scope(s) is None]
    if bad:
        raise ClientSpecError(f"--scope: not a system scope we grant: {' '.join(bad)}")
    if bool(jwks_text) == bool(jwks_url):
        raise ClientSpecError("--jwks-file or --jwks-url: exactly one")
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise ClientSpecError("--jwks-url: an http(s) URL")
    jwks = None
    if jwks_text:
        try:
            jwks = parse_jwks(jwks_text)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ClientSpecError(f"--jwks-file: {exc}") from None
    return scope_text, jwks


def validate_npis(role: str, npis: tuple[str, ...]) -> tuple[str, ...]:
    """The NPIs an ehr client speaks for, each with a valid check digit; ClientSpecError if not."""
    if npis and role != "ehr":
        raise ClientSpecError("--npi: only ehr clients speak for practitioners")
    bad = [n for n in npis if not is_valid_npi(n)]
    if bad:
        raise ClientSpecError(f"--npi: not a valid NPI (10 digits, Luhn check): {' '.join(bad)}")
    return tuple(dict.fromkeys(npis))


def add_client(
    runtime: Runtime,
    *,
    client_id: str,
    name: str,
    role: str,
    organization: str | None = None,
    scopes: str | None = None,
    jwks_text: str | None = None,
    jwks_url: str | None = None,
    now: datetime | None = None,
    npis: tuple[str, ...] = (),
) -> ClientRow:
    """Register a client (ClientSpecError / ClientExists when it cannot be)."""
    npis = validate_npis(role, npis)
    scope_text, jwks = validate(
        client_id=client_id,
        role=role,
        organization=organization,
        scopes=scopes,
        jwks_text=jwks_text,
        jwks_url=jwks_url,
    )
    with write_session(runtime.sessions) as session:
        return ClientStore(session).add(
            client_id=client_id,
            name=name,
            role=role,
            organization=organization,
            scopes=scope_text,
            jwks=jwks,
            jwks_url=jwks_url,
            now=now or utcnow(),
            npis=npis,
        )


def list_clients(runtime: Runtime) -> list[ClientRow]:
    """Every registered client."""
    with read_session(runtime.sessions) as session:
        return ClientStore(session).list()


def set_enabled(runtime: Runtime, client_id: str, enabled: bool) -> bool:
    """Enable or disable a client; False when unknown. Tokens already issued expire (<= 5 min)."""
    with write_session(runtime.sessions) as session:
        return ClientStore(session).set_enabled(client_id, enabled, now=utcnow())


def update_client(
    runtime: Runtime,
    client_id: str,
    *,
    organization: str | None = None,
    npis: tuple[str, ...] | None = None,
) -> ClientRow | None:
    """Change the Organization or NPIs a client acts for; None when unknown."""
    with write_session(runtime.sessions) as session:
        store = ClientStore(session)
        found = store.get(client_id)
        if found is None:
            return None
        if organization is not None and not _ORGANIZATION.match(organization):
            raise ClientSpecError("--organization: Organization/<id>")
        if organization is not None and found.role not in ("payer", "ehr"):
            raise ClientSpecError("--organization: only ehr and payer clients act for one")
        checked = validate_npis(found.role, npis) if npis is not None else None
        return store.update(client_id, now=utcnow(), organization=organization, npis=checked)
