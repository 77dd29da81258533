"""The client registry of the FHIR API, the jti of assertions seen, and the signing key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_bridge.store.models import ApiClient, AssertionJti
from fhir_bridge.store.signing_keys import named_secret

ACCESS_TOKEN_KEY = "access-token"


@dataclass(frozen=True)
class ClientRow:
    """One registered client; only public key material."""

    client_id: str
    name: str
    role: str
    organization: str | None
    scopes: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    enabled: bool
    created_at: datetime
    #: NPIs of the practitioners an ehr client speaks for
    npis: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        """The JSON the CLI and API show (key ids, never key material)."""
        kids = [k.get("kid") for k in (self.jwks or {}).get("keys", [])]
        return {
            "client_id": self.client_id,
            "name": self.name,
            "role": self.role,
            "organization": self.organization,
            "scopes": self.scopes.split(),
            "keys": {"jwks_url": self.jwks_url} if self.jwks_url else {"kids": kids},
            "npis": list(self.npis),
            "enabled": self.enabled,
            "created_at": self.created_at.isoformat(timespec="seconds"),
        }


def _row(c: ApiClient) -> ClientRow:
    return ClientRow(
        client_id=c.client_id,
        name=c.name,
        role=c.role,
        organization=c.organization,
        scopes=c.scopes,
        jwks=json.loads(c.jwks) if c.jwks else None,
        jwks_url=c.jwks_url,
        enabled=c.enabled,
        created_at=c.created_at,
        npis=tuple((c.npis or "").split()),
    )


class ClientExists(Exception):
    """A client with this client_id is already registered."""


class ClientStore:
    """Registered clients, the jti of every assertion seen, and the token signing key."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        *,
        client_id: str,
        name: str,
        role: str,
        organization: str | None,
        scopes: str,
        jwks: dict[str, Any] | None,
        jwks_url: str | None,
        now: datetime,
        npis: tuple[str, ...] = (),
    ) -> ClientRow:
        """Register a client; ClientExists when the id is taken."""
        try:
            with self.session.begin_nested():
                self.session.execute(
                    insert(ApiClient).values(
                        client_id=client_id,
                        name=name,
                        role=role,
                        organization=organization,
                        scopes=scopes,
                        jwks=json.dumps(jwks) if jwks else None,
                        jwks_url=jwks_url,
                        npis=" ".join(npis) or None,
                        enabled=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise ClientExists(client_id) from None
        found = self.get(client_id)
        assert found is not None
        return found

    def get(self, client_id: str) -> ClientRow | None:
        """The client, enabled or not."""
        c = self.session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
        return _row(c) if c else None

    def list(self) -> list[ClientRow]:
        """Every client, by client_id."""
        return [
            _row(c) for c in self.session.scalars(select(ApiClient).order_by(ApiClient.client_id))
        ]

    def set_enabled(self, client_id: str, enabled: bool, *, now: datetime) -> bool:
        """Enable or disable; False when there is no such client."""
        result = self.session.execute(
            update(ApiClient)
            .where(ApiClient.client_id == client_id)
            .values(enabled=enabled, updated_at=now)
        )
        return bool(result.rowcount)

    def update(
        self,
        client_id: str,
        *,
        now: datetime,
        organization: str | None = None,
        npis: tuple[str, ...] | None = None,
        scopes: str | None = None,
    ) -> ClientRow | None:
        """Change what a client acts for (given fields only); None when there is no such client."""
        values: dict[str, Any] = {"updated_at": now}
        if organization is not None:
            values["organization"] = organization
        if npis is not None:
            values["npis"] = " ".join(npis) or None
        if scopes is not None:
            values["scopes"] = scopes
        result = self.session.execute(
            update(ApiClient).where(ApiClient.client_id == client_id).values(**values)
        )
        return self.get(client_id) if result.rowcount else None

    def claim_jti(self, client_id: str, jti: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record an assertion's jti; False when it was already used and has not yet expired."""
        self.session.execute(delete(AssertionJti).where(AssertionJti.expires_at <= now))
        try:
            with self.session.begin_nested():
                self.session.execute(
                    insert(AssertionJti).values(client_id=client_id, jti=jti, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True

    def signing_secret(self, *, now: datetime) -> str:
        """The access-token secret, made on first use (every process of the store shares it)."""
        return named_secret(self.session, ACCESS_TOKEN_KEY, now=now)
