"""Which resource each Bundle entry writes: identity, re-sends, and reference resolution.

Within a referral Bundle, entries are matched on business identifiers only: a ServiceRequest
on its placer identifier (a re-send is its new version), a Patient, Practitioner, ... on an
identifier matching exactly one resource on file. An entry without identifiers stands for
what the re-sent referral already links to at the same place, and only while unchanged;
otherwise it is new. ``urn:uuid`` placeholders and conditional references are then resolved
to ``Type/id`` and rewritten into every body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from fhir_bridge.fhir.bundle_plan import (
    BundleOp,
    bad,
    conditional_query,
    token_matches,
)
from fhir_bridge.fhir.search_query import SearchQuery
from fhir_bridge.fhir.transaction import (
    BUNDLE_WRITE_TYPES,
    RequestUrl,
    entry_path,
    identity_claim,
    iter_references,
    parse_conditional_reference,
    rewrite_references,
)
from fhir_bridge.services.fhir_write.common import (
    WriteResult,
    claimable,
    find_matches,
    multiple,
)
from fhir_bridge.services.referral_intake import (
    ReferralIntake,
    focus_reference,
    placer_claim,
)
from fhir_bridge.store.repository import ResourceStore, StoredResource

#: types a referral Bundle's POST entries are matched on by identifier (a ServiceRequest is
#: matched on its placer identifier instead)
IDENTIFIED_TYPES = tuple(t for t in BUNDLE_WRITE_TYPES if t != "ServiceRequest")


@dataclass
class Run:
    """One attempt at a set of entries: resolved ids, matches found, rewritten bodies, results."""

    ids: dict[int, str] = field(default_factory=dict)
    existing: dict[int, StoredResource] = field(default_factory=dict)
    claims: dict[int, tuple[str, str]] = field(default_factory=dict)
    bodies: dict[int, dict[str, Any]] = field(default_factory=dict)
    results: dict[int, WriteResult] = field(default_factory=dict)
    #: POST entries that are a new version of a resource on file (a referral re-sent)
    upserts: set[int] = field(default_factory=set)
    #: the version on file of each re-sent referral, before this write
    previous: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: entries without identifiers matched to what the re-sent referral links to (if unchanged)
    linked: set[int] = field(default_factory=set)


def resolve_ids(
    store: ResourceStore, ops: Sequence[BundleOp], run: Run, intake: ReferralIntake | None
) -> None:
    """Which resource each write entry targets: a match of its condition, its id, or a new id."""
    for op in ops:
        if op.method == "POST":
            referral = op.rtype == "ServiceRequest"
            if (
                intake is not None
                and (op.if_none_exist is None or referral)
                and _identify(store, op, run, intake)
            ):
                continue
            if op.if_none_exist is not None:
                matches = find_matches(store.session, op.if_none_exist)
                if len(matches) > 1:
                    raise multiple(f"{op.path}.request.ifNoneExist")
                if matches:
                    run.existing[op.index] = matches[0]
                    run.ids[op.index] = matches[0].resource_id
                    continue
                claim = claimable(identity_claim(op.if_none_exist))
                if claim:
                    run.claims[op.index] = claim
            run.ids[op.index] = str(uuid4())
        elif op.method == "PUT":
            run.ids[op.index] = _put_target(store, op)
        else:
            run.ids[op.index] = str(op.url.resource_id)
    if intake is not None:
        _match_resent_links(store, ops, run)
        _match_resent_tasks(store, ops, run, intake)


def _match_resent_links(store: ResourceStore, ops: Sequence[BundleOp], run: Run) -> None:
    """A re-sent referral's entries without identifiers (a Condition, say) are the resources
    the referral on file links to at the same place (``reasonReference[0]``): no duplicates."""
    by_full_url = {op.full_url: op for op in ops if op.full_url and op.method == "POST"}
    for op in ops:
        if op.index not in run.upserts or op.resource is None:
            continue
        on_file = store.get(op.rtype, run.ids[op.index])
        if on_file is None:
            continue
        previous = dict(iter_references(on_file.resource))
        for path, value in iter_references(op.resource):
            target = by_full_url.get(value)
            if target is None or target.index in run.existing or target.index in run.upserts:
                continue
            old_type, _, old_id = previous.get(path, "").partition("/")
            found = store.get(old_type, old_id) if old_type == target.rtype and old_id else None
            if found is not None:
                run.existing[target.index] = found
                run.ids[target.index] = found.resource_id
                run.claims.pop(target.index, None)
                run.linked.add(target.index)


def _match_resent_tasks(
    store: ResourceStore, ops: Sequence[BundleOp], run: Run, intake: ReferralIntake
) -> None:
    """A re-sent referral Bundle's fulfil Task (no identifier to match on) is the Task that
    already tracks its ServiceRequest, when that one is the EHR's: no second Task."""
    by_full_url = {op.full_url: op for op in ops if op.full_url}
    for op in ops:
        if op.method != "POST" or op.rtype != "Task" or op.index in run.existing:
            continue
        assert op.resource is not None
        sr_op = by_full_url.get(focus_reference(op.resource))
        if sr_op is None or sr_op.index not in run.upserts:
            continue
        sr = store.get("ServiceRequest", run.ids[sr_op.index])
        tracked = intake.tracker(sr) if sr is not None else None
        if tracked is not None and not intake.is_ours(tracked.resource):
            run.existing[op.index] = tracked
            run.ids[op.index] = tracked.resource_id
            run.claims.pop(op.index, None)


def _identify(store: ResourceStore, op: BundleOp, run: Run, intake: ReferralIntake) -> bool:
    """Referral Bundles: match a POST entry on its business identifier (no duplicates on retry).

    A ServiceRequest with a placer identifier on file becomes its new version; a Patient (or
    Practitioner, Organization, ...) whose identifier matches exactly one resource on file is
    that resource. Otherwise the identifier is claimed, so a concurrent twin converges. True
    when the entry's target was decided here.
    """
    assert op.resource is not None
    if op.rtype == "ServiceRequest":
        claim = placer_claim(op.resource)
        if claim is None:
            return False
        existing = intake.existing(op.resource)
        if existing is not None:
            run.ids[op.index] = existing.resource_id
            run.upserts.add(op.index)
            run.previous[op.index] = existing.resource
            return True
        run.claims[op.index] = claim
        run.ids[op.index] = str(uuid4())
        return True
    if op.rtype not in IDENTIFIED_TYPES:
        return False
    idents = [
        (i["system"], i["value"])
        for i in op.resource.get("identifier") or []
        if isinstance(i, dict)
        and isinstance(i.get("system"), str)
        and isinstance(i.get("value"), str)
    ]
    for system, value in idents:
        found = store.search_by_identifier(op.rtype, system, value)
        if len(found) == 1:
            run.existing[op.index] = found[0]
            run.ids[op.index] = found[0].resource_id
            return True
    if idents:
        run.claims[op.index] = idents[0]
    run.ids[op.index] = str(uuid4())
    return True


def _put_target(store: ResourceStore, op: BundleOp) -> str:
    assert op.resource is not None
    if op.query is None:
        return str(op.url.resource_id)
    matches = find_matches(store.session, op.query)
    if len(matches) > 1:
        raise multiple(f"{op.path}.request.url")
    body_id = op.resource.get("id")
    if matches:
        if body_id is not None and body_id != matches[0].resource_id:
            raise bad(
                400,
                "invalid",
                "The resource id differs from the resource the condition matches",
                f"{entry_path(op.index, op.rtype)}.id",
            )
        return matches[0].resource_id
    return str(body_id) if body_id else str(uuid4())


def check_overlap(ops: Sequence[BundleOp], run: Run) -> None:
    """R4: one transaction may not write the same resource twice (nor create two resources
    with the same business identifier)."""
    seen: set[tuple[str, str]] = set()
    claimed: set[tuple[str, str, str]] = set()
    for op in ops:
        if op.method == "GET" or op.index in run.existing:
            continue
        key = (op.rtype, run.ids[op.index])
        if key in seen:
            raise bad(
                400,
                "duplicate",
                f"{op.rtype}/{key[1]} is written by more than one entry",
                f"{op.path}.request.url",
            )
        seen.add(key)
        claim = run.claims.get(op.index)
        if claim is not None:
            if (op.rtype, *claim) in claimed:
                raise bad(
                    400,
                    "duplicate",
                    f"Another entry creates a {op.rtype} with the same identifier",
                    f"{entry_path(op.index, op.rtype)}.identifier",
                )
            claimed.add((op.rtype, *claim))


def _pending_matches(ops: Sequence[BundleOp], run: Run, query: SearchQuery) -> set[str]:
    """Ids of this Bundle's own resources matching an identifier-only query."""
    if any(c.name != "identifier" or c.modifier for c in query.criteria):
        return set()
    found = set()
    for op in ops:
        if op.resource is None or op.rtype != query.resource_type:
            continue
        idents = [i for i in op.resource.get("identifier", []) if isinstance(i, dict)]
        if all(any(token_matches(v, i) for v in c.values for i in idents) for c in query.criteria):
            found.add(run.ids[op.index])
    return found


def reference_map(store: ResourceStore, ops: Sequence[BundleOp], run: Run) -> dict[str, str]:
    """fullUrl placeholders and conditional references -> the ``Type/id`` they stand for."""
    mapping = {
        op.full_url: f"{op.rtype}/{run.ids[op.index]}"
        for op in ops
        if op.full_url and op.method in ("POST", "PUT")
    }
    for op in ops:
        if op.resource is None:
            continue
        for rel, value in iter_references(op.resource):
            if value in mapping:
                continue
            if value.startswith("urn:uuid:"):
                raise bad(
                    422,
                    "not-found",
                    "The reference names no fullUrl of a created entry of this Bundle",
                    f"{entry_path(op.index, op.rtype)}.{rel}",
                )
            cond = parse_conditional_reference(value)
            if cond is not None:
                expression = f"{entry_path(op.index, op.rtype)}.{rel}"
                mapping[value] = _resolve_reference(store, ops, run, cond, expression)
    return mapping


def _resolve_reference(
    store: ResourceStore, ops: Sequence[BundleOp], run: Run, cond: RequestUrl, expression: str
) -> str:
    query = conditional_query(cond.resource_type, cond.params or (), expression)
    ids = {m.resource_id for m in find_matches(store.session, query)}
    ids |= _pending_matches(ops, run, query)
    if not ids:
        raise bad(422, "not-found", "The conditional reference matches no resource", expression)
    if len(ids) > 1:
        raise bad(
            412,
            "processing",
            "The conditional reference matches several resources",
            expression,
        )
    return f"{cond.resource_type}/{ids.pop()}"


def rewrite(store: ResourceStore, ops: Sequence[BundleOp], run: Run) -> None:
    """Every entry's body with its references resolved to ``Type/id``."""
    mapping = reference_map(store, ops, run)
    for op in ops:
        if op.resource is not None:
            run.bodies[op.index] = rewrite_references(op.resource, mapping)
