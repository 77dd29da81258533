"""What one request discloses, collected for its AuditEvent ("who saw this patient").

Views call ``disclose`` with every resource they send (matches, includes, batch entries,
operation results) and ``disclose_patients`` when they know the patients directly (a CDex
answer). The audit hook turns this into the AuditEvent's patient entities after the
response has gone out.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import g

from fhir_bridge.services.resources import StoredResource


def disclose(resources: Iterable[StoredResource]) -> None:
    """Remember resources this request sends to its caller."""
    g.setdefault("disclosed", []).extend(resources)


def disclose_patients(patient_ids: Iterable[str]) -> None:
    """Remember patients whose records this request discloses."""
    g.setdefault("disclosed_patients", set()).update(patient_ids)


def mark_operation(name: str) -> None:
    """The request is an operation (``Patient-everything``, ...): audited as its own subtype."""
    g.audit_operation = name


def mark_written(reference: str) -> None:
    """The resource a write created or changed (``Task/123``), for the AuditEvent's entity."""
    g.audit_written = reference


def collected() -> tuple[list[StoredResource], set[str], str | None, str | None]:
    """Everything collected: resources, patient ids, operation, written reference."""
    return (
        list(g.get("disclosed", [])),
        set(g.get("disclosed_patients", set())),
        g.get("audit_operation"),
        g.get("audit_written"),
    )
