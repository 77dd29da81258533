"""The caller of one request: a registered client, its role, organization and granted scopes."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_bridge.security.scopes import Scope, allowed, parse_scopes

ROLES = ("ehr", "payer", "clinic", "admin")
#: roles that see every patient (the clinic's own systems)
UNSCOPED_ROLES = frozenset({"clinic", "admin"})


@dataclass(frozen=True)
class Principal:
    """Who is calling (from a verified access token)."""

    client_id: str
    role: str
    organization: str | None
    scopes: tuple[Scope, ...]
    token_id: str = ""

    @classmethod
    def from_claims(cls, claims: dict[str, object]) -> Principal:
        """Build from verified access-token claims."""
        org = claims.get("org")
        return cls(
            client_id=str(claims["sub"]),
            role=str(claims.get("role", "")),
            organization=str(org) if org else None,
            scopes=tuple(parse_scopes(str(claims.get("scope", "")))),
            token_id=str(claims.get("jti", "")),
        )

    @property
    def member_scoped(self) -> bool:
        """True when the caller sees only some patients (payers and EHRs)."""
        return self.role not in UNSCOPED_ROLES

    def may(self, resource_type: str, interaction: str) -> bool:
        """Do the granted scopes allow ``interaction`` on ``resource_type``?"""
        return allowed(self.scopes, resource_type, interaction)
