"""After references resolve: what a re-sent referral's entries stand for.

An entry without identifiers stands for what the re-sent referral links to only while it says
the same; an unidentified PractitionerRole is the one on file joining the same practitioner and
organization; an entry matched to a resource on file that says something else leaves that
resource as it is and a warning for the inbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from fhir_bridge.fhir.bundle_plan import BundleOp, conditional_query
from fhir_bridge.fhir.outcome import Issue
from fhir_bridge.fhir.transaction import entry_path
from fhir_bridge.services.fhir_write.common import find_matches
from fhir_bridge.services.fhir_write.resolve import Run
from fhir_bridge.store.repository import ResourceStore


def _same(sent: dict[str, Any], on_file: dict[str, Any]) -> bool:
    """Do two versions say the same (ids and meta aside)?"""
    ignored = ("id", "meta")
    return {k: v for k, v in sent.items() if k not in ignored} == {
        k: v for k, v in on_file.items() if k not in ignored
    }


def unlink_changed(ops: Sequence[BundleOp], run: Run) -> bool:
    """An entry without identifiers stands for what the re-sent referral links to only while
    it is unchanged; a changed one is a new resource (and the referral's reference moves to
    it). True when a link was dropped (the references must be resolved again)."""
    dropped = False
    for op in ops:
        if op.index in run.linked and not _same(
            run.bodies[op.index], run.existing[op.index].resource
        ):
            del run.existing[op.index]
            run.linked.discard(op.index)
            run.ids[op.index] = str(uuid4())
            dropped = True
    return dropped


def link_known_roles(store: ResourceStore, ops: Sequence[BundleOp], run: Run) -> bool:
    """A new PractitionerRole without identifiers is the role on file that joins the same
    practitioner and organization and says the same (its business key), not a second copy.
    True when an entry was linked (the references must be resolved again)."""
    linked = False
    for op in ops:
        if op.method != "POST" or op.rtype != "PractitionerRole" or op.index in run.existing:
            continue
        body = run.bodies[op.index]
        if body.get("identifier"):
            continue
        keys = [
            (name, ref)
            for name, element in (
                ("practitioner", "practitioner"),
                ("organization", "organization"),
            )
            if isinstance(ref := (body.get(element) or {}).get("reference"), str)
        ]
        if len(keys) < 2:
            continue
        query = conditional_query("PractitionerRole", keys, f"{op.path}.resource")
        same = [m for m in find_matches(store.session, query) if _same(body, m.resource)]
        if len(same) == 1:
            run.existing[op.index] = same[0]
            run.ids[op.index] = same[0].resource_id
            run.claims.pop(op.index, None)
            linked = True
    return linked


#: what a referral Bundle says about the patient (directory entries differ without consequence)
PATIENT_DATA = ("Patient", "Coverage", "Condition")


def kept_on_file(ops: Sequence[BundleOp], run: Run) -> list[Issue]:
    """A warning per entry matched to a resource on file that says something else: the record on
    file is kept (another organization's, or the clinic's), and the inbox shows what differs by
    element name (never the values: they may be PHI)."""
    issues = []
    for op in ops:
        if op.index not in run.existing or op.index in run.linked or op.rtype not in PATIENT_DATA:
            continue
        sent, on_file = run.bodies[op.index], run.existing[op.index].resource
        differing = sorted(
            k for k in sent if k not in ("id", "meta", "text") and sent[k] != on_file.get(k)
        )
        if differing:
            issues.append(
                Issue(
                    "warning",
                    "conflict",
                    f"{op.rtype}/{run.ids[op.index]} on file differs from the one sent "
                    f"({', '.join(differing)}); the record on file was kept",
                    (entry_path(op.index, op.rtype),),
                )
            )
    return issues
