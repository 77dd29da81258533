"""SMART system scopes, v1 (``system/Observation.read``) and v2 (``system/Observation.rs``).

A scope grants permissions ``c r u d s`` on one resource type or on ``*``. v1 ``read`` is v2
``rs``, ``write`` is ``cud`` and ``*`` is ``cruds``. Granular v2 scopes (``...rs?category=x``) are
not supported: they grant nothing rather than more than they say.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fhir_bridge.fhir.search_params import SEARCHABLE_TYPES

#: the FHIR R4 resource types a scope may name: those the bridge serves (``*`` names them all)
SERVED_TYPES = frozenset({*SEARCHABLE_TYPES, "CodeSystem", "ConceptMap"})
PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^system/(?P<type>\*|[A-Z][A-Za-z]{1,63})\.(?P<perm>read|write|\*|[cruds]{1,5})$"
)

#: what each FHIR interaction needs
INTERACTION_PERMISSION = {
    "read": "r",
    "vread": "r",
    "history": "r",
    "search": "s",
    "create": "c",
    "update": "u",
    "delete": "d",
    "operation": "r",
}


@dataclass(frozen=True)
class Scope:
    """One parsed system scope: a resource type (or ``*``) and its permission letters."""

    resource_type: str
    permissions: frozenset[str]
    text: str

    def allows(self, resource_type: str, permission: str) -> bool:
        """Does this scope grant ``permission`` (one letter) on ``resource_type``?"""
        return permission in self.permissions and self.resource_type in ("*", resource_type)


def parse_scope(text: str) -> Scope | None:
    """The scope, or None when it is not a system scope we grant (unknown, granular, disordered,
    or naming a resource type this server does not serve)."""
    m = _SCOPE.match(text)
    if not m or (m.group("type") != "*" and m.group("type") not in SERVED_TYPES):
        return None
    perm = m.group("perm")
    letters = _V1.get(perm, perm)
    if perm not in _V1 and "".join(sorted(letters, key=PERMISSIONS.index)) != letters:
        return None  # v2 letters must be in c-r-u-d-s order, each once
    if len(set(letters)) != len(letters):
        return None
    return Scope(m.group("type"), frozenset(letters), text)


def parse_scopes(text: str) -> list[Scope]:
    """Every grantable scope in a space-separated list (others are dropped)."""
    return [s for s in (parse_scope(t) for t in text.split()) if s is not None]


def allowed(scopes: Iterable[Scope], resource_type: str, interaction: str) -> bool:
    """Do ``scopes`` allow ``interaction`` (read, search, create, ...) on ``resource_type``?"""
    permission = INTERACTION_PERMISSION[interaction]
    return any(s.allows(resource_type, permission) for s in scopes)


def covered_by(requested: Scope, granted: Iterable[Scope]) -> bool:
    """Is every permission of ``requested`` within the client's ``granted`` scopes?"""
    granted = list(granted)
    for p in requested.permissions:
        if requested.resource_type == "*":
            ok = any(g.resource_type == "*" and p in g.permissions for g in granted)
        else:
            ok = any(g.allows(requested.resource_type, p) for g in granted)
        if not ok:
            return False
    return True


def grant(requested: str, registered: str) -> list[Scope]:
    """The requested scopes that the client's registration covers (the rest are not granted)."""
    allowed_scopes = parse_scopes(registered)
    return [s for s in parse_scopes(requested) if covered_by(s, allowed_scopes)]
