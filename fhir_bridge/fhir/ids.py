"""Deterministic resource ids from business identifiers, so replays never duplicate."""

from __future__ import annotations

import uuid

#: Namespace of fhir-bridge resource ids (uuid5 of the project URL).
BRIDGE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "http://fhir-bridge.org/fhir")


def stable_id(resource_type: str, system: str, value: str) -> str:
    """A FHIR id derived from a resource type and one of its identifiers (a UUID string)."""
    return str(uuid.uuid5(BRIDGE_NAMESPACE, f"{resource_type}|{system}|{value}"))
