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
from collections.abc import Callable, Sequence
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
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import write_session
from fhir_bridge.store.errors import (
    DuplicateIdentifier,
    ResourceGone,
    ResourceNotFound,
    VersionConflict,
)
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.search import Cursor, run_search

CHANNEL = "fhir"
DIRECT_TYPES = DIRECT_WRITE_TYPES
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


@dataclass(frozen=True)
class WriteResult:
    """A stored version and whether this request created the resource."""

    stored: StoredResource
    created: bool

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
        channel=CHANNEL,
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


def _for_create(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without a client id (the server assigns ids on create)."""
    return {k: v for k, v in resource.items() if k != "id"}


# --- create / update ------------------------------------------------------------------------------


def create(
    runtime: Runtime, resource_type: str, inbound: Inbound, *, if_none_exist: str | None
) -> WriteResult:
    """POST [base]/[type] (optionally conditional); 201 created, or 200 with the one match."""
    resource = _resource_body(inbound.body, resource_type)
    query = None
    if if_none_exist is not None:
        query = conditional_query(resource_type, parse_query(if_none_exist), "If-None-Exist")
    _require_valid(resource, runtime.settings.fhir_base_url)
    claim = identity_claim(query) if query else None

    def work(store: ResourceStore) -> WriteResult:
        matches = find_matches(store.session, query) if query else []
        if len(matches) > 1:
            raise _multiple("If-None-Exist")
        _keep(store, inbound)
        if matches:
            return WriteResult(matches[0], False)
        try:
            stored = store.create(_for_create(resource), claim_identifiers=[claim] if claim else [])
        except DuplicateIdentifier as exc:
            return WriteResult(exc.existing, False)
        return WriteResult(stored, True)

    return _with_retry(runtime, work, resource_type)


def update(
    runtime: Runtime,
    resource_type: str,
    resource_id: str,
    inbound: Inbound,
    *,
    if_match: int | None,
) -> WriteResult:
    """PUT [base]/[type]/[id]: 200 updated, 201 created (update as create), 412 when stale."""
    resource = _resource_body(inbound.body, resource_type)
    if resource.get("id") != resource_id:
        raise FhirError(
            400,
            error("invalid", "The resource id must equal the id in the URL", f"{resource_type}.id"),
        )
    _require_valid(resource, runtime.settings.fhir_base_url)

    def work(store: ResourceStore) -> WriteResult:
        _keep(store, inbound)
        stored, created = _put(store, resource, if_match, "If-Match")
        return WriteResult(stored, created)

    return _with_retry(runtime, work, resource_type)


def _put(
    store: ResourceStore, resource: dict[str, Any], if_match: int | None, expression: str
) -> tuple[StoredResource, bool]:
    try:
        return store.update(resource, expected_version=if_match)
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


def _resolve_ids(store: ResourceStore, ops: Sequence[_Op], run: _Run) -> None:
    """Which resource each write entry targets: a match of its condition, its id, or a new id."""
    for op in ops:
        if op.method == "POST":
            if op.if_none_exist is not None:
                matches = find_matches(store.session, op.if_none_exist)
                if len(matches) > 1:
                    raise _multiple(f"{op.path}.request.ifNoneExist")
                if matches:
                    run.existing[op.index] = matches[0]
                    run.ids[op.index] = matches[0].resource_id
                    continue
                claim = identity_claim(op.if_none_exist)
                if claim:
                    run.claims[op.index] = claim
            run.ids[op.index] = str(uuid4())
        elif op.method == "PUT":
            run.ids[op.index] = _put_target(store, op)
        else:
            run.ids[op.index] = str(op.url.resource_id)


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
    """R4: one transaction may not write the same resource twice."""
    seen: set[tuple[str, str]] = set()
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


def _write(store: ResourceStore, op: _Op, run: _Run) -> WriteResult:
    if op.method == "GET":
        try:
            return WriteResult(store.read(op.rtype, run.ids[op.index]), False)
        except (ResourceNotFound, ResourceGone) as exc:
            raise _relocated(exc, f"{op.path}.request.url") from None
    if op.index in run.existing:
        return WriteResult(run.existing[op.index], False)
    body = run.bodies[op.index]
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


def _execute(store: ResourceStore, ops: Sequence[_Op]) -> dict[int, WriteResult]:
    """Resolve, rewrite and write ``ops`` in FHIR processing order, in the caller's transaction."""
    ordered = [ops[i] for i in processing_order([op.method for op in ops])]
    run = _Run()
    _resolve_ids(store, ordered, run)
    _check_overlap(ordered, run)
    mapping = _reference_map(store, ordered, run)
    for op in ordered:
        if op.resource is not None:
            run.bodies[op.index] = rewrite_references(op.resource, mapping)
    for op in ordered:
        run.results[op.index] = _write(store, op, run)
    return run.results


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
    return operation_outcome([Issue("information", "informational", text)])


def process_bundle(runtime: Runtime, inbound: Inbound, *, prefer: str) -> dict[str, Any]:
    """POST [base] with a transaction or batch Bundle; the response Bundle."""
    bundle = parse_json(inbound.body)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _bad(400, "invalid", "POST [base] takes a transaction or batch Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise _bad(400, "invalid", "Bundle.type must be transaction or batch", "Bundle.type")
    base = runtime.settings.fhir_base_url
    problems = _errors(validate_resource(bundle, base=base))
    entries = bundle.get("entry") or []
    if kind == "transaction":
        return _transaction(runtime, inbound, entries, problems, base, prefer)
    return _batch(runtime, inbound, entries, problems, base, prefer)


def _transaction(
    runtime: Runtime,
    inbound: Inbound,
    entries: list[Any],
    problems: list[Issue],
    base: str,
    prefer: str,
) -> dict[str, Any]:
    """All or nothing: any failing entry rolls back every write and the inbound payload."""
    ops = [_plan(i, entry, base) for i, entry in enumerate(entries)]
    if problems:
        raise FhirError(422, problems)

    def work(store: ResourceStore) -> dict[int, WriteResult]:
        _keep(store, inbound)
        return _execute(store, ops)

    results = _with_retry(runtime, work)
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [_response_entry(results[op.index], base, prefer) for op in ops],
    }


def _method(entry: Any) -> str | None:
    request = entry.get("request") if isinstance(entry, dict) else None
    method = request.get("method") if isinstance(request, dict) else None
    return method if isinstance(method, str) else None


def _batch(
    runtime: Runtime,
    inbound: Inbound,
    entries: list[Any],
    problems: list[Issue],
    base: str,
    prefer: str,
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
            op = _plan(i, entries[i], base)
            if i in by_entry:
                raise FhirError(422, by_entry[i])
            result = _with_retry(runtime, lambda store, op=op: _execute(store, [op])[op.index])
            out[i] = _response_entry(result, base, prefer)
        except FhirError as exc:
            out[i] = _failed_entry(exc)
    return {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [out[i] for i in range(len(entries))],
    }
