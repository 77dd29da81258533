"""FHIR write interactions: create, conditional create, update (If-Match), transaction, batch.

Each use case owns its transaction (``write_session``): the inbound body as received (channel
"fhir") and every resource version it causes commit together, before the 2xx goes out, or not
at all. A request that fails writes nothing, its inbound payload included: the payload row is
part of the transaction, and a refused request was answered 4xx (never acknowledged), so the
sender still holds it. A batch keeps its body first in a transaction of its own, then runs each
entry in its own transaction.

Resources are the parsed JSON dicts (``jsonio``: decimals exact), validated with
``validate_resource`` and stored as dicts; they are never round-tripped through the models.

Concurrency. A conditional create (``If-None-Exist`` / ``entry.request.ifNoneExist``) whose
query is exactly one ``identifier=system|value`` claims that identifier in the store (a unique
constraint), so concurrent identical requests converge on one resource: the losers answer 200
with the winner (direct create) or retry their transaction, which then finds it. Any other
conditional query (several parameters, another parameter, a conditional update or reference)
is a search followed by a write: on PostgreSQL two concurrent requests can both find nothing
and both create. On SQLite writers are serialized (BEGIN IMMEDIATE), so the race cannot happen.

Conditional references (``Patient?identifier=..``) resolve against the store plus, for
identifier-only queries, the Bundle's own entries; a resolved reference's target type is not
re-checked against the element's allowed targets. Several matches answer 412 with issue code
``processing`` (R4's ``multiple-matches`` is not in ``fhir.outcome.ISSUE_CODES`` yet).

Conditional matches are evaluated inside the write transaction with ``run_search`` given an
"everything" snapshot cursor: a write transaction must not take the snapshot lock that paging
readers take on PostgreSQL (it would wait for the other writers, which may wait for it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from uuid import uuid4

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.dates import to_instant
from fhir_bridge.fhir.outcome import FhirError, Issue, error, operation_outcome
from fhir_bridge.fhir.search_query import SearchQuery, TokenValue, parse_search
from fhir_bridge.fhir.transaction import (
    BUNDLE_WRITE_TYPES,
    DIRECT_WRITE_TYPES,
    BadUrl,
    RequestUrl,
    entry_index,
    entry_path,
    identity_claim,
    iter_references,
    parse_conditional_reference,
    parse_query,
    parse_request_url,
    processing_order,
    rewrite_references,
    status_line,
)
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.services.access_policy import WriteAccess
from fhir_bridge.services.referral_fetch import prefetch
from fhir_bridge.services.referral_intake import (
    CLAIM_MAX,
    IntakePolicy,
    ReferralIntake,
    focus_reference,
    is_fulfil_task,
    placer_claim,
)
from fhir_bridge.services.resources import check_visible
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import write_session
from fhir_bridge.store.errors import (
    DuplicateIdentifier,
    ResourceGone,
    ResourceNotFound,
    VersionConflict,
)
from fhir_bridge.store.member_scope import EVERYTHING, MemberScope
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.search import Cursor, run_search

CHANNEL = "fhir"
DIRECT_TYPES = DIRECT_WRITE_TYPES
#: types a referral Bundle's POST entries are matched on by identifier
IDENTIFIED_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Coverage",
    "Condition",
    "Task",
)
BUNDLE_TYPES = BUNDLE_WRITE_TYPES
#: a transaction that lost a race (identifier claim, same id) runs again and converges
MAX_ATTEMPTS = 3
RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")
_EVERYTHING = Cursor(snapshot=2**62, key=None, pk=0, forward=True).encode()

T = TypeVar("T")


@dataclass(frozen=True)
class Inbound:
    """The request as received: kept byte for byte with the write it causes."""

    body: bytes
    method: str
    path: str
    content_type: str | None
    request_id: str | None
    #: how it came in: "fhir" (pushed to /fhir) or "poll" (pulled from a partner's server)
    channel: str = CHANNEL


@dataclass(frozen=True)
class WriteResult:
    """A stored version and whether this request created the resource."""

    stored: StoredResource
    created: bool
    #: warnings the write produced (a referral accepted with remarks)
    issues: tuple[Issue, ...] = ()
    #: patients whose records the answer discloses (a CDex answer), for the audit trail
    disclosed_patients: tuple[str, ...] = ()

    @property
    def status(self) -> int:
        """201 when created, else 200."""
        return 201 if self.created else 200


# --- parsing and validation --------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    """The body as JSON (decimals exact); FhirError(400) when it is not JSON."""
    try:
        return jsonio.loads(body)
    except jsonio.JsonError as exc:
        raise FhirError(400, error("structure", str(exc), "Resource")) from None


def _resource_body(body: bytes, resource_type: str) -> dict[str, Any]:
    payload = parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("resourceType"), str):
        raise FhirError(
            400,
            error("structure", "The body must be a FHIR resource with a resourceType", "Resource"),
        )
    if payload["resourceType"] != resource_type:
        raise FhirError(
            400,
            error(
                "invalid",
                f"The body is a {payload['resourceType']}, the URL names {resource_type}",
                f"{resource_type}.resourceType",
            ),
        )
    return payload


def read_resource(body: bytes, resource_type: str) -> dict[str, Any]:
    """The body as a resource of ``resource_type``; FhirError(400) otherwise."""
    return _resource_body(body, resource_type)


def require_valid(resource: dict[str, Any], base: str) -> None:
    """FhirError(422) with every error-level problem of the resource."""
    _require_valid(resource, base)


def keep_inbound(store: ResourceStore, inbound: Inbound) -> None:
    """Keep the request body exactly as received, in the write's own transaction."""
    _keep(store, inbound)


def _errors(issues: Sequence[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


def _require_valid(resource: dict[str, Any], base: str) -> None:
    problems = _errors(validate_resource(resource, base=base))
    if problems:
        raise FhirError(422, problems)


def _at(issue: Issue, expression: str) -> Issue:
    return Issue(issue.severity, issue.code, issue.diagnostics, (expression,))


def _relocated(exc: FhirError, expression: str, status: int | None = None) -> FhirError:
    return FhirError(status or exc.status, [_at(i, expression) for i in exc.issues])


def conditional_query(
    resource_type: str, params: Sequence[tuple[str, str]], expression: str
) -> SearchQuery:
    """Parse a conditional query strictly; any problem is a 400 naming ``expression``."""
    try:
        query = parse_search(resource_type, params)
    except FhirError as exc:
        raise _relocated(exc, expression, 400) from None
    if not query.criteria:
        raise FhirError(
            400, error("invalid", "A conditional request needs a search criterion", expression)
        )
    return query


def parse_if_match(header: str, expression: str = "If-Match") -> int:
    """``W/"3"`` (or ``"3"``, ``3``) -> 3; anything else is a 400."""
    tag = header.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise FhirError(
            400, error("invalid", 'If-Match must be a version ETag such as W/"3"', expression)
        )
    return int(tag)


# --- store helpers ------------------------------------------------------------------------------


def find_matches(session: Session, query: SearchQuery) -> list[StoredResource]:
    """Up to two live resources matching ``query``, as this transaction sees them."""
    probe = replace(
        query,
        count=2,
        sort=(),
        summary=None,
        total=None,
        elements=None,
        includes=(),
        revincludes=(),
        cursor=_EVERYTHING,
    )
    return run_search(session, probe).matches


def _keep(store: ResourceStore, inbound: Inbound) -> None:
    store.keep_inbound(
        body=inbound.body,
        channel=inbound.channel,
        method=inbound.method,
        path=inbound.path,
        content_type=inbound.content_type,
        request_id=inbound.request_id,
        sha256=hashlib.sha256(inbound.body).hexdigest(),
    )


def _with_retry(
    runtime: Runtime, work: Callable[[ResourceStore], T], expression: str = "Bundle"
) -> T:
    """Run ``work`` in one write transaction; run it again when a concurrent writer won a race."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            with write_session(runtime.sessions) as session:
                return work(ResourceStore(session))
        except (IntegrityError, DuplicateIdentifier):
            if attempt == MAX_ATTEMPTS - 1:
                raise FhirError(
                    409,
                    error(
                        "conflict",
                        "Concurrent requests wrote the same resources; retry the request",
                        expression,
                    ),
                ) from None
    raise AssertionError("unreachable")


def _multiple(expression: str) -> FhirError:
    return FhirError(
        412,
        error("processing", "The conditional criteria match more than one resource", expression),
    )


def _claimable(claim: tuple[str, str] | None) -> tuple[str, str] | None:
    """The claim when the store can hold it (system and value <= CLAIM_MAX), else None:
    such an identifier is matched by search only, without the uniqueness guard."""
    if claim is None or len(claim[0]) > CLAIM_MAX or len(claim[1]) > CLAIM_MAX:
        return None
    return claim


def _for_create(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without a client id (the server assigns ids on create)."""
    return {k: v for k, v in resource.items() if k != "id"}


# --- create / update ------------------------------------------------------------------------------


def create(
    runtime: Runtime,
    resource_type: str,
    inbound: Inbound,
    *,
    if_none_exist: str | None,
    policy: IntakePolicy | None = None,
    fetched: Mapping[str, dict[str, Any]] | None = None,
    access: WriteAccess | None = None,
) -> WriteResult:
    """POST [base]/[type] (optionally conditional); 201 created, or 200 with the one match.

    With an intake ``policy``, a ServiceRequest or fulfil Task is taken in as a referral.
    ``fetched`` (absolute URL -> resource) is what the caller already read from the physician's
    server (pull mode); when given, nothing is fetched here. ``access``: what the caller may
    write (the clinic's own callers when None); a refusal rolls the write back.
    """
    resource = _resource_body(inbound.body, resource_type)
    query = None
    if if_none_exist is not None:
        query = conditional_query(resource_type, parse_query(if_none_exist), "If-None-Exist")
    _require_valid(resource, runtime.settings.fhir_base_url)
    claim = _claimable(identity_claim(query)) if query else None
    if fetched is None:
        fetched = prefetch(runtime, [(resource_type, resource)]) if policy else {}

    def work(store: ResourceStore) -> WriteResult:
        matches = find_matches(store.session, query) if query else []
        if len(matches) > 1:
            raise _multiple("If-None-Exist")
        _keep(store, inbound)
        if matches:
            if access is not None:
                access.check_on_file(store, matches[0].resource, "If-None-Exist")
            return WriteResult(matches[0], False)
        result = _create_one(store, resource_type, resource, claim, policy, fetched, access)
        if access is not None:
            access.check_written(store, result.stored.resource, resource_type)
        return result

    return _with_retry(runtime, work, resource_type)


def _create_one(
    store: ResourceStore,
    resource_type: str,
    resource: dict[str, Any],
    claim: tuple[str, str] | None,
    policy: IntakePolicy | None,
    fetched: Mapping[str, dict[str, Any]] | None,
    access: WriteAccess | None,
) -> WriteResult:
    """The write of a direct create: a referral taken in, or a plain resource."""
    if policy is not None and resource_type == "ServiceRequest":
        intake = ReferralIntake(store, policy, fetched=fetched)
        existing = intake.existing(resource)
        if existing is not None and access is not None:
            access.check_on_file(store, existing.resource, resource_type)
        previous = existing.resource if existing is not None else None
        return _receive_service_request(intake, resource, previous=previous)
    if policy is not None and resource_type == "Task" and not is_fulfil_task(resource):
        raise _not_a_referral_task()
    if policy is not None and is_fulfil_task(resource):
        return _receive_task(ReferralIntake(store, policy, fetched=fetched), resource, claim)
    try:
        stored = store.create(_for_create(resource), claim_identifiers=[claim] if claim else [])
    except DuplicateIdentifier as exc:
        if access is not None:
            access.check_on_file(store, exc.existing.resource, resource_type)
        return WriteResult(exc.existing, False)
    return WriteResult(stored, True)


def _receive_service_request(
    intake: ReferralIntake,
    resource: dict[str, Any],
    root: str = "ServiceRequest",
    previous: dict[str, Any] | None = None,
) -> WriteResult:
    warnings = intake.check(resource, root)
    stored, created = intake.store_service_request(resource)
    intake.register(stored, warnings=warnings, previous=previous)
    return WriteResult(stored, created, tuple(warnings))


def _not_a_referral_task(expression: str = "Task.code") -> FhirError:
    """A Task the bridge would store and never answer: refused instead."""
    return FhirError(
        422,
        error(
            "not-supported",
            "The bridge takes Tasks that fulfil a referral (code fulfill, focus a ServiceRequest) "
            "and Da Vinci CDex data requests (data-request-query, data-request-code) only",
            expression,
        ),
    )


def _receive_task(
    intake: ReferralIntake,
    resource: dict[str, Any],
    claim: tuple[str, str] | None,
    root: str = "Task",
) -> WriteResult:
    """A fulfil Task: its focus must be a referral on file or fetched from a physician server."""
    focus = focus_reference(resource)
    warnings: list[Issue] = []
    if focus is not None and focus in intake.fetched:
        sr = intake.fetched[focus]
        warnings = intake.check(sr, f"{root}.focus.resolve()")
        intake.store_service_request(sr)
    sr_stored = intake.service_request_for(focus) if focus else None
    if sr_stored is None:
        raise FhirError(
            422,
            error(
                "not-found",
                "The Task's focus must be a ServiceRequest on file, in the same Bundle, or on a "
                "registered physician server",
                f"{root}.focus",
            ),
        )
    tracked = intake.tracker(sr_stored)
    if not intake.supersedable(tracked):
        assert tracked is not None
        return WriteResult(tracked, False, tuple(warnings))  # the first fulfil Task tracks
    claims = [claim] if claim else []
    try:
        stored = intake.store.create(_for_create(resource), claim_identifiers=claims)
    except DuplicateIdentifier as exc:
        return WriteResult(exc.existing, False, tuple(warnings))
    intake.track(sr_stored, stored, warnings)
    return WriteResult(stored, True, tuple(warnings))


def update(
    runtime: Runtime,
    resource_type: str,
    resource_id: str,
    inbound: Inbound,
    *,
    if_match: int | None,
    policy: IntakePolicy | None = None,
    access: WriteAccess | None = None,
) -> WriteResult:
    """PUT [base]/[type]/[id]: 200 updated, 201 created (update as create), 412 when stale.

    With an intake ``policy``, a ServiceRequest is checked and kept as a referral, and a Task
    that tracks a referral updates the inbox's status.
    """
    resource = _resource_body(inbound.body, resource_type)
    if resource_type == "Task" and policy is not None and not is_fulfil_task(resource):
        raise _not_a_referral_task()
    if resource.get("id") != resource_id:
        raise FhirError(
            400,
            error("invalid", "The resource id must equal the id in the URL", f"{resource_type}.id"),
        )
    _require_valid(resource, runtime.settings.fhir_base_url)

    def work(store: ResourceStore) -> WriteResult:
        _keep(store, inbound)
        on_file = store.get(resource_type, resource_id)
        if access is not None and on_file is not None:
            access.check_on_file(store, on_file.resource, resource_type)
        intake = ReferralIntake(store, policy) if policy is not None else None
        warnings = intake.check(resource) if intake and resource_type == "ServiceRequest" else []
        claim = placer_claim(resource) if intake and resource_type == "ServiceRequest" else None
        stored, created = _put(store, resource, if_match, "If-Match", [claim] if claim else [])
        if intake is not None and resource_type == "ServiceRequest":
            previous = on_file.resource if on_file is not None else None
            intake.register(stored, warnings=warnings, previous=previous)
        elif intake is not None and resource_type == "Task":
            intake.task_changed(stored)
        if access is not None:
            access.check_written(store, stored.resource, resource_type)
        return WriteResult(stored, created, tuple(warnings))

    return _with_retry(runtime, work, resource_type)


def _put(
    store: ResourceStore,
    resource: dict[str, Any],
    if_match: int | None,
    expression: str,
    claims: Sequence[tuple[str, str]] = (),
) -> tuple[StoredResource, bool]:
    try:
        return store.update(resource, expected_version=if_match, claim_identifiers=claims)
    except VersionConflict as exc:
        raise _relocated(exc, expression) from None
    except ResourceNotFound:
        raise FhirError(
            412,
            error(
                "conflict", "If-Match names a version of a resource that does not exist", expression
            ),
        ) from None


# --- Bundles --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Op:
    """One Bundle entry, checked: what to do, on which type, under which conditions."""

    index: int
    method: str
    url: RequestUrl
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: SearchQuery | None = None
    if_match: int | None = None
    query: SearchQuery | None = None  # conditional PUT

    @property
    def rtype(self) -> str:
        return self.url.resource_type

    @property
    def path(self) -> str:
        return entry_path(self.index)


@dataclass
class _Run:
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


def _bad(status: int, code: str, diagnostics: str, expression: str) -> FhirError:
    return FhirError(status, error(code, diagnostics, expression))


def _plan(index: int, entry: Any, base: str) -> _Op:
    """Check one entry's request and resource; FhirError naming the entry when it is unusable."""
    path = entry_path(index)
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict):
        raise _bad(400, "required", "A transaction/batch entry needs a request", f"{path}.request")
    method, url = request.get("method"), request.get("url")
    if method not in ("POST", "PUT", "GET"):
        raise _bad(
            405, "not-supported", f"{method} is not supported in a Bundle", f"{path}.request.method"
        )
    if not isinstance(url, str) or not url.strip():
        raise _bad(400, "required", "The entry's request.url is missing", f"{path}.request.url")
    try:
        parsed = parse_request_url(url, base)
    except BadUrl as exc:
        raise _bad(400, "invalid", str(exc), f"{path}.request.url") from None
    if method == "GET":
        if parsed.resource_id is None:
            raise _bad(
                400,
                "not-supported",
                "GET entries support read (Type/id) only",
                f"{path}.request.url",
            )
        return _Op(index, method, parsed)
    return _plan_write(index, entry, request, method, parsed)


def _plan_write(
    index: int, entry: dict[str, Any], request: dict[str, Any], method: str, parsed: RequestUrl
) -> _Op:
    path = entry_path(index)
    resource = entry.get("resource")
    if not isinstance(resource, dict):
        raise _bad(400, "required", f"A {method} entry needs a resource", f"{path}.resource")
    rtype = resource.get("resourceType")
    if rtype != parsed.resource_type:
        raise _bad(
            400,
            "invalid",
            f"request.url names {parsed.resource_type}, the resource is {rtype}",
            f"{path}.request.url",
        )
    if rtype not in BUNDLE_TYPES:
        raise _bad(
            405, "not-supported", f"{method} of {rtype} is not supported", f"{path}.request.url"
        )
    if rtype == "Task" and not is_fulfil_task(resource):
        raise _not_a_referral_task(f"{entry_path(index, rtype)}.code")
    full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
    if method == "POST":
        if parsed.resource_id is not None or parsed.conditional:
            raise _bad(
                400, "invalid", "A POST entry's url is the resource type", f"{path}.request.url"
            )
        ine = request.get("ifNoneExist")
        query = None
        if ine is not None:
            query = conditional_query(rtype, parse_query(str(ine)), f"{path}.request.ifNoneExist")
            _check_condition_agrees(query, resource, f"{path}.request.ifNoneExist")
        return _Op(index, method, parsed, resource, full_url, if_none_exist=query)
    if parsed.resource_id is None and not parsed.conditional:
        raise _bad(
            400, "invalid", "A PUT entry's url is Type/id or Type?parameters", f"{path}.request.url"
        )
    if parsed.resource_id is not None and resource.get("id") != parsed.resource_id:
        raise _bad(
            400,
            "invalid",
            "The resource id must equal the id in request.url",
            f"{entry_path(index, rtype)}.id",
        )
    if_match = request.get("ifMatch")
    return _Op(
        index,
        method,
        parsed,
        resource,
        full_url,
        if_match=parse_if_match(str(if_match), f"{path}.request.ifMatch") if if_match else None,
        query=conditional_query(rtype, parsed.params or (), f"{path}.request.url")
        if parsed.conditional
        else None,
    )


def _check_condition_agrees(query: SearchQuery, resource: dict[str, Any], expression: str) -> None:
    """An identifier-only ``ifNoneExist`` must name one of the resource's own identifiers: a
    stale condition would answer with another resource on file and drop this one unseen."""
    if any(c.name != "identifier" or c.modifier for c in query.criteria):
        return
    idents = [i for i in resource.get("identifier") or [] if isinstance(i, dict)]
    for crit in query.criteria:
        if not any(_token_matches(v, i) for v in crit.values for i in idents):
            raise _bad(
                422,
                "invariant",
                "ifNoneExist names an identifier the resource does not carry",
                expression,
            )


def _resolve_ids(
    store: ResourceStore, ops: Sequence[_Op], run: _Run, intake: ReferralIntake | None
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
                    raise _multiple(f"{op.path}.request.ifNoneExist")
                if matches:
                    run.existing[op.index] = matches[0]
                    run.ids[op.index] = matches[0].resource_id
                    continue
                claim = _claimable(identity_claim(op.if_none_exist))
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


def _match_resent_links(store: ResourceStore, ops: Sequence[_Op], run: _Run) -> None:
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
    store: ResourceStore, ops: Sequence[_Op], run: _Run, intake: ReferralIntake
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


def _identify(store: ResourceStore, op: _Op, run: _Run, intake: ReferralIntake) -> bool:
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


def _put_target(store: ResourceStore, op: _Op) -> str:
    assert op.resource is not None
    if op.query is None:
        return str(op.url.resource_id)
    matches = find_matches(store.session, op.query)
    if len(matches) > 1:
        raise _multiple(f"{op.path}.request.url")
    body_id = op.resource.get("id")
    if matches:
        if body_id is not None and body_id != matches[0].resource_id:
            raise _bad(
                400,
                "invalid",
                "The resource id differs from the resource the condition matches",
                f"{entry_path(op.index, op.rtype)}.id",
            )
        return matches[0].resource_id
    return str(body_id) if body_id else str(uuid4())


def _check_overlap(ops: Sequence[_Op], run: _Run) -> None:
    """R4: one transaction may not write the same resource twice (nor create two resources
    with the same business identifier)."""
    seen: set[tuple[str, str]] = set()
    claimed: set[tuple[str, str, str]] = set()
    for op in ops:
        if op.method == "GET" or op.index in run.existing:
            continue
        key = (op.rtype, run.ids[op.index])
        if key in seen:
            raise _bad(
                400,
                "duplicate",
                f"{op.rtype}/{key[1]} is written by more than one entry",
                f"{op.path}.request.url",
            )
        seen.add(key)
        claim = run.claims.get(op.index)
        if claim is not None:
            if (op.rtype, *claim) in claimed:
                raise _bad(
                    400,
                    "duplicate",
                    f"Another entry creates a {op.rtype} with the same identifier",
                    f"{entry_path(op.index, op.rtype)}.identifier",
                )
            claimed.add((op.rtype, *claim))


def _pending_matches(ops: Sequence[_Op], run: _Run, query: SearchQuery) -> set[str]:
    """Ids of this Bundle's own resources matching an identifier-only query."""
    if any(c.name != "identifier" or c.modifier for c in query.criteria):
        return set()
    found = set()
    for op in ops:
        if op.resource is None or op.rtype != query.resource_type:
            continue
        idents = [i for i in op.resource.get("identifier", []) if isinstance(i, dict)]
        if all(any(_token_matches(v, i) for v in c.values for i in idents) for c in query.criteria):
            found.add(run.ids[op.index])
    return found


def _token_matches(value: Any, identifier: dict[str, Any]) -> bool:
    if not isinstance(value, TokenValue):
        return False
    if value.code is not None and identifier.get("value") != value.code:
        return False
    return not value.system_given or identifier.get("system") == value.system


def _reference_map(store: ResourceStore, ops: Sequence[_Op], run: _Run) -> dict[str, str]:
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
                raise _bad(
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
    store: ResourceStore, ops: Sequence[_Op], run: _Run, cond: RequestUrl, expression: str
) -> str:
    query = conditional_query(cond.resource_type, cond.params or (), expression)
    ids = {m.resource_id for m in find_matches(store.session, query)}
    ids |= _pending_matches(ops, run, query)
    if not ids:
        raise _bad(422, "not-found", "The conditional reference matches no resource", expression)
    if len(ids) > 1:
        raise _bad(
            412,
            "processing",
            "The conditional reference matches several resources",
            expression,
        )
    return f"{cond.resource_type}/{ids.pop()}"


def _write(store: ResourceStore, op: _Op, run: _Run, scope: MemberScope) -> WriteResult:
    if op.method == "GET":
        try:
            check_visible(store.session, scope, op.rtype, run.ids[op.index])
            return WriteResult(store.read(op.rtype, run.ids[op.index]), False)
        except (ResourceNotFound, ResourceGone) as exc:
            raise _relocated(exc, f"{op.path}.request.url") from None
    if op.index in run.existing:
        return WriteResult(run.existing[op.index], False)
    body = run.bodies[op.index]
    if op.index in run.upserts:
        stored, _ = store.update({**body, "id": run.ids[op.index]})
        return WriteResult(stored, False)
    if op.method == "POST":
        claim = run.claims.get(op.index)
        stored = store.create(
            _for_create(body),
            resource_id=run.ids[op.index],
            claim_identifiers=[claim] if claim else [],
        )
        return WriteResult(stored, True)
    stored, created = _put(
        store, {**body, "id": run.ids[op.index]}, op.if_match, f"{op.path}.request.ifMatch"
    )
    return WriteResult(stored, created)


def _execute(
    store: ResourceStore,
    ops: Sequence[_Op],
    intake: ReferralIntake | None = None,
    *,
    access: WriteAccess | None = None,
    scope: MemberScope = EVERYTHING,
) -> dict[int, WriteResult]:
    """Resolve, rewrite and write ``ops`` in FHIR processing order, in the caller's transaction.

    With ``intake`` (a Bundle carrying a referral), entries are matched on their business
    identifiers and the referral is taken in after the writes (its rules may still refuse
    the whole transaction). GET entries answer within ``scope``; writes are checked against
    ``access`` before and after they are made (a refusal rolls the transaction back).
    """
    ordered = [ops[i] for i in processing_order([op.method for op in ops])]
    run = _Run()
    if access is not None:
        _check_entries(access, ordered, intake is not None)
    _resolve_ids(store, ordered, run, intake)
    if access is not None:
        _check_targets(store, access, ordered, run)
    _check_overlap(ordered, run)
    _rewrite(store, ordered, run)
    if _unlink_changed(ordered, run):
        _rewrite(store, ordered, run)
    for op in ordered:
        run.results[op.index] = _write(store, op, run, scope)
    if intake is not None:
        _take_in_referrals(intake, ordered, run)
    if access is not None:
        _check_written(store, access, ordered, run, intake)
    return run.results


def _rewrite(store: ResourceStore, ops: Sequence[_Op], run: _Run) -> None:
    """Every entry's body with its references resolved to ``Type/id``."""
    mapping = _reference_map(store, ops, run)
    for op in ops:
        if op.resource is not None:
            run.bodies[op.index] = rewrite_references(op.resource, mapping)


def _same(sent: dict[str, Any], on_file: dict[str, Any]) -> bool:
    """Do two versions say the same (ids and meta aside)?"""
    ignored = ("id", "meta")
    return {k: v for k, v in sent.items() if k not in ignored} == {
        k: v for k, v in on_file.items() if k not in ignored
    }


def _unlink_changed(ops: Sequence[_Op], run: _Run) -> bool:
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


def _check_entries(access: WriteAccess, ops: Sequence[_Op], carries_referral: bool) -> None:
    for op in ops:
        if op.method != "GET":
            access.check_entry(
                op.method, op.rtype, carries_referral=carries_referral, expression=op.path
            )


def _check_targets(
    store: ResourceStore, access: WriteAccess, ops: Sequence[_Op], run: _Run
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
    ops: Sequence[_Op],
    run: _Run,
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


def _take_in_referrals(intake: ReferralIntake, ops: Sequence[_Op], run: _Run) -> None:
    """Check and register each referral ServiceRequest written, and link fulfil Tasks."""
    tasks = {
        focus_reference(run.bodies[op.index]): op
        for op in ops
        if op.rtype == "Task" and op.resource is not None and is_fulfil_task(op.resource)
    }
    for op in ops:
        if op.rtype != "ServiceRequest" or op.resource is None:
            continue
        result = run.results[op.index]
        stored = result.stored
        warnings = intake.check(stored.resource, entry_path(op.index, "ServiceRequest"))
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
            raise _bad(422, "required", "A fulfil Task needs a focus", f"{root}.focus")
        warnings: list[Issue] = []
        if focus in intake.fetched:
            warnings = intake.check(intake.fetched[focus], f"{root}.focus.resolve()")
            intake.store_service_request(intake.fetched[focus])
        sr = intake.service_request_for(focus)
        if sr is None:
            raise _bad(
                422,
                "not-found",
                "The Task's focus must be a ServiceRequest on file, in the same Bundle, or on a "
                "registered physician server",
                f"{root}.focus",
            )
        if intake.supersedable(intake.tracker(sr)):
            intake.track(sr, run.results[op.index].stored, warnings)
        run.results[op.index] = replace(run.results[op.index], issues=tuple(warnings))


def _response_entry(result: WriteResult, base: str, prefer: str) -> dict[str, Any]:
    stored = result.stored
    response: dict[str, Any] = {
        "status": status_line(result.status),
        "location": f"{stored.reference}/_history/{stored.version_id}",
        "etag": stored.etag,
        "lastModified": to_instant(stored.last_updated),
    }
    entry: dict[str, Any] = {"fullUrl": f"{base}/{stored.reference}"}
    if prefer == "representation":
        entry["resource"] = orjson.Fragment(stored.content)
    elif prefer == "OperationOutcome":
        response["outcome"] = informational(result)
    if result.issues and "outcome" not in response:
        response["outcome"] = operation_outcome(result.issues)
    entry["response"] = response
    return entry


def _failed_entry(exc: FhirError) -> dict[str, Any]:
    return {
        "response": {
            "status": status_line(exc.status),
            "outcome": operation_outcome(exc.issues),
        }
    }


def informational(result: WriteResult) -> dict[str, Any]:
    """An OperationOutcome saying what a successful write did (Prefer: return=OperationOutcome)."""
    stored = result.stored
    verb = "Created" if result.created else "Stored"
    text = f"{verb} {stored.reference} version {stored.version_id}"
    return operation_outcome([Issue("information", "informational", text), *result.issues])


def process_bundle(
    runtime: Runtime,
    inbound: Inbound,
    *,
    prefer: str,
    policy: IntakePolicy | None = None,
    access: WriteAccess | None = None,
    scope: MemberScope = EVERYTHING,
    on_read: Callable[[StoredResource], None] | None = None,
) -> dict[str, Any]:
    """POST [base] with a transaction or batch Bundle; the response Bundle.

    With an intake ``policy``, referral ServiceRequests and fulfil Tasks are taken in. GET
    entries answer within ``scope`` and writes are checked against ``access`` (the access
    policy's), exactly as the same requests made one by one. ``on_read`` hears of every
    resource a GET entry returns (for the audit trail).
    """
    bundle = parse_json(inbound.body)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _bad(400, "invalid", "POST [base] takes a transaction or batch Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise _bad(400, "invalid", "Bundle.type must be transaction or batch", "Bundle.type")
    base = runtime.settings.fhir_base_url
    problems = _errors(validate_resource(bundle, base=base))
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirError(
            422, problems or [error("structure", "entry must be a list", "Bundle.entry")]
        )
    where = _Where(base, prefer, policy, access, scope, on_read)
    if kind == "transaction":
        return _transaction(runtime, inbound, entries, problems, where)
    return _batch(runtime, inbound, entries, problems, where)


@dataclass(frozen=True)
class _Where:
    """What every entry of one Bundle is processed with."""

    base: str
    prefer: str
    policy: IntakePolicy | None
    access: WriteAccess | None
    scope: MemberScope
    on_read: Callable[[StoredResource], None] | None = None

    def answered(self, op: _Op, result: WriteResult) -> dict[str, Any]:
        """The response entry of a successful entry (a GET's resource is reported read)."""
        if op.method == "GET" and self.on_read is not None:
            self.on_read(result.stored)
        return _response_entry(result, self.base, self.prefer)


def _carries_referral(ops: Sequence[_Op]) -> bool:
    return any(
        op.resource is not None
        and (op.rtype == "ServiceRequest" or (op.rtype == "Task" and is_fulfil_task(op.resource)))
        for op in ops
    )


def _intake_for(
    runtime: Runtime, ops: Sequence[_Op], policy: IntakePolicy | None
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
) -> dict[str, Any]:
    """All or nothing: any failing entry rolls back every write and the inbound payload."""
    ops = [_plan(i, entry, where.base) for i, entry in enumerate(entries)]
    if problems:
        raise FhirError(422, problems)
    intake_for = _intake_for(runtime, ops, where.policy)

    def work(store: ResourceStore) -> dict[int, WriteResult]:
        _keep(store, inbound)
        return _execute(store, ops, intake_for(store), access=where.access, scope=where.scope)

    results = _with_retry(runtime, work)
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [where.answered(op, results[op.index]) for op in ops],
    }


def _method(entry: Any) -> str | None:
    request = entry.get("request") if isinstance(entry, dict) else None
    method = request.get("method") if isinstance(request, dict) else None
    return method if isinstance(method, str) else None


def _batch(
    runtime: Runtime, inbound: Inbound, entries: list[Any], problems: list[Issue], where: _Where
) -> dict[str, Any]:
    """Each entry on its own (its own transaction); failures become per-entry outcomes."""
    general = [p for p in problems if not p.expression or entry_index(p.expression[0]) is None]
    if general:
        raise FhirError(422, general)
    with write_session(runtime.sessions) as session:
        _keep(ResourceStore(session), inbound)
    by_entry: dict[int, list[Issue]] = {}
    for p in problems:
        by_entry.setdefault(entry_index(p.expression[0]) or 0, []).append(p)
    out: dict[int, dict[str, Any]] = {}
    methods = [_method(e) for e in entries]
    for i in processing_order(methods):
        try:
            op = _plan(i, entries[i], where.base)
            if i in by_entry:
                raise FhirError(422, by_entry[i])
            intake_for = _intake_for(runtime, [op], where.policy)
            result = _with_retry(
                runtime,
                lambda store, op=op, intake_for=intake_for: _execute(
                    store, [op], intake_for(store), access=where.access, scope=where.scope
                )[op.index],
            )
            out[i] = where.answered(op, result)
        except FhirError as exc:
            out[i] = _failed_entry(exc)
    return {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [out[i] for i in range(len(entries))],
    }
