"""A session record to the FHIR resources it produces: the mapping's single entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_bridge.mapping import clinical, people
from fhir_bridge.mapping.billing import BillingLine
from fhir_bridge.mapping.context import SessionContext
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.records.model import SessionRecord


@dataclass(frozen=True)
class Flag:
    """Something staff should look at; the session is accepted anyway."""

    code: str
    message: str


@dataclass
class MappedSession:
    """The resources of a session (dicts with ids), its billing and its flags."""

    resources: list[dict[str, Any]]
    billing: list[BillingLine]
    flags: list[Flag] = field(default_factory=list)


def map_session(record: SessionRecord, tables: MappingTables, ctx: SessionContext) -> MappedSession:
    """Map a validated record to FHIR R4 resources; pure: no clock, no I/O."""
    resources: list[dict[str, Any]] = [people.patient(record, ctx)]
    for optional in (
        people.practitioner(record, ctx),
        people.payer_organization(record, ctx),
        people.coverage(record, ctx),
    ):
        if optional is not None:
            resources.append(optional)
    if record.status != "entered-in-error":
        resources += clinical.goals(record, tables, ctx)
    resources.append(clinical.procedure(record, tables, ctx))
    resources += clinical.observations(record, tables, ctx)
    return MappedSession(
        resources=resources,
        billing=clinical.billing_lines(record, tables),
        flags=_flags(record, tables, ctx),
    )


def _flags(record: SessionRecord, tables: MappingTables, ctx: SessionContext) -> list[Flag]:
    flags = []
    if record.referral is None:
        flags.append(Flag("no-referral", "The session names no referral; payers may not cover it"))
    elif ctx.referral is None:
        flags.append(Flag("referral-unknown", "The referral this session names is not on file yet"))
    if record.patient.coverage and people.is_placeholder(ctx.existing_payer_organization):
        flags.append(
            Flag(
                "payer-unknown",
                "The payer id is not on file; a placeholder payer Organization holds it",
            )
        )
    unbilled = dict.fromkeys(
        tables.techniques[t.technique].display
        for t in record.treatments
        if tables.techniques[t.technique].billing is None
    )
    flags += [Flag("not-billable", f"{name} has no billing code") for name in unbilled]

    timed = sum(b.minutes for b in clinical.billing_lines(record, tables))
    if 0 < timed < 8:
        flags.append(Flag("below-8-minutes", "Timed treatment under 8 minutes bills no unit"))
    return flags
