"""What every FHIR write shares: the request as received, results, parsing and validation,
the inbound payload kept in the write's transaction, and the retry of a lost race."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.bundle_plan import relocated
from fhir_bridge.fhir.outcome import FhirError, Issue, error
from fhir_bridge.fhir.search_query import SearchQuery
from fhir_bridge.fhir.transaction import DIRECT_WRITE_TYPES
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.services.reference_ids import _resolve as resolve_criterion
from fhir_bridge.services.reference_ids import needs_resolving
from fhir_bridge.services.referral_intake import CLAIM_MAX
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import StatementTimeout, deadline, write_session
from fhir_bridge.store.errors import DuplicateIdentifier
from fhir_bridge.store.member_scope import MemberScope
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.search import Cursor, SearchPage, run_search

CHANNEL = "fhir"
DIRECT_TYPES = DIRECT_WRITE_TYPES
#: a transaction that lost a race (identifier claim, same id) runs again and converges
MAX_ATTEMPTS = 3
EVERYTHING_CURSOR = Cursor(snapshot=2**62, key=None, pk=0, forward=True).encode()
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


@dataclass(frozen=True)
class SearchResult:
    """A GET search entry's answer: its parameters, the query as run and its page (matches
    and includes), from which the API builds the searchset ``GET [base]/Type?params`` gets."""

    params: tuple[tuple[str, str], ...]
    query: SearchQuery
    page: SearchPage

    @property
    def disclosed(self) -> list[StoredResource]:
        """Every resource the answer shows its caller (for the audit trail)."""
        return [*self.page.matches, *self.page.included]


def search_entry(
    session: Session,
    query: SearchQuery,
    scope: MemberScope,
    *,
    params: Sequence[tuple[str, str]],
    timeout: float,
    expression: str,
) -> SearchResult:
    """Run a Bundle entry's search in the entry's transaction, within ``scope``, exactly as
    ``GET [base]/Type?params`` runs it (bare ids typed, the same search timeout). A type the
    caller may not read or search is a 403, as the direct search is refused; search errors
    name ``expression``."""
    if not scope.searches(query.resource_type):
        raise FhirError(
            403,
            Issue(
                "error",
                "forbidden",
                f"The token's scopes do not allow search on {query.resource_type}",
                (expression,),
            ),
        )
    try:
        if needs_resolving(query):
            query = replace(
                query,
                criteria=tuple(
                    resolve_criterion(session, c, scope) if c.type == "reference" else c
                    for c in query.criteria
                ),
            )
        with deadline(session, timeout):
            return SearchResult(tuple(params), query, run_search(session, query, scope))
    except FhirError as exc:
        raise relocated(exc, expression) from None
    except StatementTimeout:
        raise FhirError(
            503,
            error(
                "too-costly",
                "The search took too long and was stopped; narrow it (patient, code, date)",
                expression,
            ),
        ) from None


def parse_json(body: bytes) -> Any:
    """The body as JSON (decimals exact); FhirError(400) when it is not JSON."""
    try:
        return jsonio.loads(body)
    except jsonio.JsonError as exc:
        raise FhirError(400, error("structure", str(exc), "Resource")) from None


def resource_body(body: bytes, resource_type: str) -> dict[str, Any]:
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
    return resource_body(body, resource_type)


def require_valid(resource: dict[str, Any], base: str) -> None:
    """FhirError(422) with every error-level problem of the resource."""
    check_valid(resource, base)


def keep_inbound(store: ResourceStore, inbound: Inbound) -> None:
    """Keep the request body exactly as received, in the write's own transaction."""
    keep(store, inbound)


def errors_only(issues: Sequence[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


def check_valid(resource: dict[str, Any], base: str) -> None:
    problems = errors_only(validate_resource(resource, base=base))
    if problems:
        raise FhirError(422, problems)


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
        cursor=EVERYTHING_CURSOR,
    )
    return run_search(session, probe).matches


def keep(store: ResourceStore, inbound: Inbound) -> None:
    store.keep_inbound(
        body=inbound.body,
        channel=inbound.channel,
        method=inbound.method,
        path=inbound.path,
        content_type=inbound.content_type,
        request_id=inbound.request_id,
        sha256=hashlib.sha256(inbound.body).hexdigest(),
    )


def with_retry(
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


def multiple(expression: str) -> FhirError:
    return FhirError(
        412,
        error("processing", "The conditional criteria match more than one resource", expression),
    )


def claimable(claim: tuple[str, str] | None) -> tuple[str, str] | None:
    """The claim when the store can hold it (system and value <= CLAIM_MAX), else None:
    such an identifier is matched by search only, without the uniqueness guard."""
    if claim is None or len(claim[0]) > CLAIM_MAX or len(claim[1]) > CLAIM_MAX:
        return None
    return claim


def for_create(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without a client id (the server assigns ids on create)."""
    return {k: v for k, v in resource.items() if k != "id"}


def not_a_referral_task(expression: str = "Task.code") -> FhirError:
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
