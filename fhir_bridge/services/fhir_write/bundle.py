"""Transaction and batch Bundles: plan, resolve, check access, write, take referrals in.

A transaction is all or nothing (any failing entry rolls back every write and the inbound
payload). A batch keeps its body first in a transaction of its own, then runs each entry in its
own transaction. GET entries answer within the caller's scope, and writes are checked against
its ``WriteAccess``, exactly as the same requests made one by one. The response Bundle is
shaped by the API (``api/bundle_response.py``) from the ``BundleOutcome``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fhir_bridge.fhir.bundle_plan import BundleOp, bad, plan_entry, relocated
from fhir_bridge.fhir.outcome import FhirError, Issue, error
from fhir_bridge.fhir.transaction import entry_index, entry_path, processing_order
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.services.access_policy import WriteAccess
from fhir_bridge.services.fhir_write.common import (
    Inbound,
    SearchResult,
    WriteResult,
    errors_only,
    for_create,
    keep,
    not_a_referral_task,
    parse_json,
    search_entry,
    with_retry,
)
from fhir_bridge.services.fhir_write.interactions import put
from fhir_bridge.services.fhir_write.resend import kept_on_file, link_known_roles, unlink_changed
from fhir_bridge.services.fhir_write.resolve import Run, check_overlap, resolve_ids, rewrite
from fhir_bridge.services.referral_fetch import prefetch
from fhir_bridge.services.referral_intake import (
    IntakePolicy,
    ReferralIntake,
    focus_reference,
    is_fulfil_task,
)
from fhir_bridge.services.resources import check_visible
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import write_session
from fhir_bridge.store.errors import ResourceGone, ResourceNotFound
from fhir_bridge.store.member_scope import EVERYTHING, MemberScope
from fhir_bridge.store.repository import ResourceStore


@dataclass(frozen=True)
class EntryOutcome:
    """What became of one entry: its result, or the error it was refused with (batch)."""

    method: str | None
    result: WriteResult | None = None
    error: FhirError | None = None
    #: a GET search entry's answer (its page of matches and includes)
    search: SearchResult | None = None


def _answered(op: BundleOp, answer: WriteResult | SearchResult) -> EntryOutcome:
    if isinstance(answer, SearchResult):
        return EntryOutcome(op.method, search=answer)
    return EntryOutcome(op.method, answer)


@dataclass(frozen=True)
class BundleOutcome:
    """A processed Bundle: ``transaction`` or ``batch``, and each entry's outcome in order."""

    kind: str
    entries: list[EntryOutcome]


def process_bundle(
    runtime: Runtime,
    inbound: Inbound,
    *,
    policy: IntakePolicy | None = None,
    access: WriteAccess | None = None,
    scope: MemberScope = EVERYTHING,
) -> BundleOutcome:
    """POST [base] with a transaction or batch Bundle; what became of each entry.

    With an intake ``policy``, referral ServiceRequests and fulfil Tasks are taken in. GET
    entries answer within ``scope`` and writes are checked against ``access`` (the access
    policy's), exactly as the same requests made one by one.
    """
    bundle = parse_json(inbound.body)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad(400, "invalid", "POST [base] takes a transaction or batch Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise bad(400, "invalid", "Bundle.type must be transaction or batch", "Bundle.type")
    base = runtime.settings.fhir_base_url
    problems = errors_only(validate_resource(bundle, base=base))
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirError(
            422, problems or [error("structure", "entry must be a list", "Bundle.entry")]
        )
    where = _Where(base, policy, access, scope, runtime.settings.search_timeout_seconds)
    if kind == "transaction":
        return _transaction(runtime, inbound, entries, problems, where)
    return _batch(runtime, inbound, entries, problems, where)


@dataclass(frozen=True)
class _Where:
    """What every entry of one Bundle is processed with."""

    base: str
    policy: IntakePolicy | None
    access: WriteAccess | None
    scope: MemberScope
    #: seconds a search entry may run (FHIR_BRIDGE_SEARCH_TIMEOUT_SECONDS)
    search_timeout: float = 0


def _plan(index: int, entry: Any, base: str) -> BundleOp:
    """The entry's plan; a Task must be one the bridge answers (a referral's fulfil Task)."""
    op = plan_entry(index, entry, base)
    if op.rtype == "Task" and op.resource is not None and not is_fulfil_task(op.resource):
        raise not_a_referral_task(f"{entry_path(index, op.rtype)}.code")
    return op


def _write(store: ResourceStore, op: BundleOp, run: Run, scope: MemberScope) -> WriteResult:
    if op.method == "GET":
        try:
            check_visible(store.session, scope, op.rtype, run.ids[op.index])
            return WriteResult(store.read(op.rtype, run.ids[op.index]), False)
        except (ResourceNotFound, ResourceGone) as exc:
            raise relocated(exc, f"{op.path}.request.url") from None
    if op.index in run.existing:
        return WriteResult(run.existing[op.index], False)
    body = run.bodies[op.index]
    if op.index in run.upserts:
        stored, _ = store.update({**body, "id": run.ids[op.index]})
        return WriteResult(stored, False)
    if op.method == "POST":
        claim = run.claims.get(op.index)
        stored = store.create(
            for_create(body),
            resource_id=run.ids[op.index],
            claim_identifiers=[claim] if claim else [],
        )
        return WriteResult(stored, True)
    stored, created = put(
        store, {**body, "id": run.ids[op.index]}, op.if_match, f"{op.path}.request.ifMatch"
    )
    return WriteResult(stored, created)


def _execute(
    store: ResourceStore,
    ops: Sequence[BundleOp],
    intake: ReferralIntake | None = None,
    *,
    access: WriteAccess | None = None,
    scope: MemberScope = EVERYTHING,
    search_timeout: float = 0,
) -> dict[int, WriteResult | SearchResult]:
    """Resolve, rewrite and write ``ops`` in FHIR processing order, in the caller's transaction.

    With ``intake`` (a Bundle carrying a referral), entries are matched on their business
    identifiers and the referral is taken in after the writes (its rules may still refuse
    the whole transaction). GET entries answer within ``scope``; writes are checked against
    ``access`` before and after they are made (a refusal rolls the transaction back).
    GET searches run last (FHIR processing order), so they see the transaction's writes.
    """
    ordered = [ops[i] for i in processing_order([op.method for op in ops])]
    run = Run()
    if access is not None:
        _check_entries(access, ordered, intake is not None)
    resolve_ids(store, ordered, run, intake)
    if access is not None:
        _check_targets(store, access, ordered, run)
    check_overlap(ordered, run)
    rewrite(store, ordered, run)
    if intake is not None and link_known_roles(store, ordered, run):
        rewrite(store, ordered, run)
    if unlink_changed(ordered, run):
        rewrite(store, ordered, run)
    if intake is not None:
        for op in ordered:
            if op.rtype == "ServiceRequest" and op.method in ("POST", "PUT"):
                run.bodies[op.index] = intake.linked(run.bodies[op.index])
    searches: dict[int, SearchResult] = {}
    for op in ordered:
        if op.searches and op.query is not None:
            searches[op.index] = search_entry(
                store.session,
                op.query,
                scope,
                params=op.url.params or (),
                timeout=search_timeout,
                expression=f"{op.path}.request.url",
            )
        else:
            run.results[op.index] = _write(store, op, run, scope)
    if intake is not None:
        _take_in_referrals(intake, ordered, run)
    if access is not None:
        _check_written(store, access, ordered, run, intake)
    return {**run.results, **searches}


def _check_entries(access: WriteAccess, ops: Sequence[BundleOp], carries_referral: bool) -> None:
    for op in ops:
        if op.method != "GET":
            access.check_entry(
                op.method, op.rtype, carries_referral=carries_referral, expression=op.path
            )


def _check_targets(
    store: ResourceStore, access: WriteAccess, ops: Sequence[BundleOp], run: Run
) -> None:
    """Resources on file that entries would replace must be the caller's (no hijacking)."""
    for op in ops:
        if op.method == "PUT" or op.index in run.upserts:
            on_file = store.get(op.rtype, run.ids[op.index])
            if on_file is not None:
                access.check_on_file(store, on_file.resource, entry_path(op.index, op.rtype))


def _check_written(
    store: ResourceStore,
    access: WriteAccess,
    ops: Sequence[BundleOp],
    run: Run,
    intake: ReferralIntake | None,
) -> None:
    """What the entries wrote (not what they matched on file) stays the caller's own."""

    def focus(ref: str) -> dict[str, Any] | None:
        found = intake.service_request_for(ref) if intake is not None else None
        return found.resource if found is not None else None

    for op in ops:
        if op.method == "GET" or op.index in run.existing:
            continue
        stored = run.results[op.index].stored
        access.check_written(store, stored.resource, entry_path(op.index, op.rtype), focus=focus)


def _take_in_referrals(intake: ReferralIntake, ops: Sequence[BundleOp], run: Run) -> None:
    """Check and register each referral ServiceRequest written, and link fulfil Tasks."""
    tasks = {
        focus_reference(run.bodies[op.index]): op
        for op in ops
        if op.rtype == "Task" and op.resource is not None and is_fulfil_task(op.resource)
    }
    kept = kept_on_file(ops, run)
    for op in ops:
        if op.rtype != "ServiceRequest" or op.resource is None:
            continue
        result = run.results[op.index]
        stored = result.stored
        warnings = intake.check(stored.resource, entry_path(op.index, "ServiceRequest")) + kept
        task_op = tasks.pop(stored.reference, None)
        task = run.results[task_op.index].stored if task_op is not None else None
        if task is not None and intake.supersedable(intake.tracker(stored)):
            intake.track(stored, task, warnings)
        else:
            intake.register(stored, warnings=warnings, previous=run.previous.get(op.index))
        run.results[op.index] = replace(result, issues=tuple(warnings))
    for focus, op in tasks.items():
        root = entry_path(op.index, "Task")
        if focus is None:
            raise bad(422, "required", "A fulfil Task needs a focus", f"{root}.focus")
        warnings: list[Issue] = []
        if focus in intake.fetched:
            warnings = intake.check(intake.fetched[focus], f"{root}.focus.resolve()")
            intake.store_service_request(intake.fetched[focus])
        sr = intake.service_request_for(focus)
        if sr is None:
            raise bad(
                422,
                "not-found",
                "The Task's focus must be a ServiceRequest on file, in the same Bundle, or on a "
                "registered physician server",
                f"{root}.focus",
            )
        if intake.supersedable(intake.tracker(sr)):
            intake.track(sr, run.results[op.index].stored, warnings)
        run.results[op.index] = replace(run.results[op.index], issues=tuple(warnings))


def _carries_referral(ops: Sequence[BundleOp]) -> bool:
    return any(
        op.resource is not None
        and (op.rtype == "ServiceRequest" or (op.rtype == "Task" and is_fulfil_task(op.resource)))
        for op in ops
    )


def _intake_for(
    runtime: Runtime, ops: Sequence[BundleOp], policy: IntakePolicy | None
) -> Callable[[ResourceStore], ReferralIntake | None]:
    """Prefetch what the Bundle's Tasks point at; then a factory of the intake per attempt."""
    if policy is None or not _carries_referral(ops):
        return lambda store: None
    fetched = prefetch(
        runtime,
        [(entry_path(op.index, op.rtype), op.resource) for op in ops if op.resource is not None],
    )
    return lambda store: ReferralIntake(store, policy, fetched=fetched)


def _transaction(
    runtime: Runtime, inbound: Inbound, entries: list[Any], problems: list[Issue], where: _Where
) -> BundleOutcome:
    """All or nothing: any failing entry rolls back every write and the inbound payload."""
    ops = [_plan(i, entry, where.base) for i, entry in enumerate(entries)]
    if problems:
        raise FhirError(422, problems)
    intake_for = _intake_for(runtime, ops, where.policy)

    def work(store: ResourceStore) -> dict[int, WriteResult | SearchResult]:
        keep(store, inbound)
        return _execute(
            store,
            ops,
            intake_for(store),
            access=where.access,
            scope=where.scope,
            search_timeout=where.search_timeout,
        )

    results = with_retry(runtime, work)
    return BundleOutcome("transaction", [_answered(op, results[op.index]) for op in ops])


def _method(entry: Any) -> str | None:
    request = entry.get("request") if isinstance(entry, dict) else None
    method = request.get("method") if isinstance(request, dict) else None
    return method if isinstance(method, str) else None


def _batch(
    runtime: Runtime, inbound: Inbound, entries: list[Any], problems: list[Issue], where: _Where
) -> BundleOutcome:
    """Each entry on its own (its own transaction); failures become per-entry outcomes."""
    general = [p for p in problems if not p.expression or entry_index(p.expression[0]) is None]
    if general:
        raise FhirError(422, general)
    with write_session(runtime.sessions) as session:
        keep(ResourceStore(session), inbound)
    by_entry: dict[int, list[Issue]] = {}
    for p in problems:
        by_entry.setdefault(entry_index(p.expression[0]) or 0, []).append(p)
    out: dict[int, EntryOutcome] = {}
    methods = [_method(e) for e in entries]
    for i in processing_order(methods):
        try:
            op = _plan(i, entries[i], where.base)
            if i in by_entry:
                raise FhirError(422, by_entry[i])
            intake_for = _intake_for(runtime, [op], where.policy)
            result = with_retry(
                runtime,
                lambda store, op=op, intake_for=intake_for: _execute(
                    store,
                    [op],
                    intake_for(store),
                    access=where.access,
                    scope=where.scope,
                    search_timeout=where.search_timeout,
                )[op.index],
            )
            out[i] = _answered(op, result)
        except FhirError as exc:
            out[i] = EntryOutcome(methods[i], error=exc)
    return BundleOutcome("batch", [out[i] for i in range(len(entries))])
