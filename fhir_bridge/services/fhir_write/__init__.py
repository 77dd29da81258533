"""FHIR writes: create, conditional create, update (If-Match), transaction, batch.

Each use case owns its transaction (``write_session``): the inbound body as received (channel
"fhir") and every resource version it causes commit together, before the 2xx goes out, or not
at all. A request that fails writes nothing, its inbound payload included: the payload row is
part of the transaction, and a refused request was answered 4xx (never acknowledged), so the
sender still holds it. A batch keeps its body first in a transaction of its own, then runs each
entry in its own transaction.

Resources are the parsed JSON dicts (``jsonio``: decimals exact), validated with
``validate_resource`` and stored as dicts; they are never round-tripped through the models.

Modules: ``common`` (the request, results, parsing, the retry of a lost race),
``interactions`` (single create and update), ``resolve`` (identity, re-sends, references),
``bundle`` (transactions and batches). Planning a Bundle's entries is pure
(``fhir/bundle_plan.py``); shaping the answer is the API's (``api/bundle_response.py``).

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

from fhir_bridge.fhir.bundle_plan import parse_if_match
from fhir_bridge.services.fhir_write.bundle import BundleOutcome, EntryOutcome, process_bundle
from fhir_bridge.services.fhir_write.common import (
    DIRECT_TYPES,
    Inbound,
    WriteResult,
    keep_inbound,
    read_resource,
    require_valid,
)
from fhir_bridge.services.fhir_write.interactions import create, update

__all__ = [
    "DIRECT_TYPES",
    "BundleOutcome",
    "EntryOutcome",
    "Inbound",
    "WriteResult",
    "create",
    "keep_inbound",
    "parse_if_match",
    "process_bundle",
    "read_resource",
    "require_valid",
    "update",
]
