"""Unprofiled time per phase of a session POST: wrap the service's steps with perf counters.

cProfile inflates Python-heavy code (SQLAlchemy statement building) more than C calls, so
``bench.session_profile`` also times the main steps of ``services.sessions`` and the store with
plain ``time.perf_counter`` wrappers (about a microsecond each) and counts SQL statements.
Times are inclusive: ``store.update`` contains ``store.create``, ``_write`` contains both.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from fhir_bridge.services import sessions as service
from fhir_bridge.store.repository import ResourceStore
from fhir_bridge.store.sessions import SessionStore

#: (owner, attribute, label); module attributes are looked up at call time by the service
TARGETS: tuple[tuple[Any, str, str], ...] = (
    (service, "submit_session", "submit_session (all of the service)"),
    (service, "load_session", "load_session (schema; 2x: check, view)"),
    (service, "_prepare", "_prepare (SQLite: map + check before the write lock)"),
    (service, "_context", "_context (identifier look-ups; 2x on SQLite)"),
    (service, "map_session", "map_session"),
    (service, "_check", "_check (validate_resource of each resource)"),
    (service, "_write", "_write (store every resource)"),
    (ResourceStore, "update_many", "  ResourceStore.update_many"),
    (ResourceStore, "_insert_resources", "  ResourceStore._insert_resources"),
    (ResourceStore, "update", "  ResourceStore.update"),
    (ResourceStore, "create", "  ResourceStore.create"),
    (ResourceStore, "_insert_version", "  ResourceStore._insert_version"),
    (ResourceStore, "_index_many", "  ResourceStore._index_many (search index)"),
    (ResourceStore, "keep_inbound", "ResourceStore.keep_inbound"),
    (SessionStore, "save", "SessionStore.save"),
    (SessionStore, "get", "SessionStore.get"),
    (Session, "commit", "Session.commit"),
    (service, "session_view", "session_view (response body)"),
)


def _wrap(fn: Callable[..., Any], slot: list[float]) -> Callable[..., Any]:
    clock = time.perf_counter

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            slot[0] += clock() - t0
            slot[1] += 1

    return timed


@contextmanager
def phases(engine: Engine) -> Iterator[dict[str, list[float]]]:
    """Within the block, label -> [seconds, calls] of each target, plus SQL statements."""
    totals: dict[str, list[float]] = {label: [0.0, 0] for _, _, label in TARGETS}
    statements = totals.setdefault("SQL statements (cursor executes)", [0.0, 0])
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in TARGETS]

    def count(*_args: Any) -> None:
        statements[1] += 1

    for owner, name, label in TARGETS:
        setattr(owner, name, _wrap(getattr(owner, name), totals[label]))
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield totals
    finally:
        event.remove(engine, "before_cursor_execute", count)
        for owner, name, original in originals:
            setattr(owner, name, original)


def report(totals: dict[str, list[float]], requests: int, wall_s: float) -> dict[str, Any]:
    """Print and return ms and calls per request of each phase."""
    per_request = wall_s / requests * 1000
    print(f"\nphases, no profiler: {per_request:.2f} ms per request (inclusive times)")
    out: dict[str, Any] = {"ms_per_request": round(per_request, 2), "phases": {}}
    for label, (seconds, calls) in totals.items():
        ms = seconds / requests * 1000
        share = ms / per_request if per_request else 0.0
        if seconds:
            print(f"  {label:52s} {ms:7.2f} ms {share:6.1%}  {calls / requests:6.1f} calls")
        else:
            print(f"  {label:52s} {'':21s}  {calls / requests:6.1f} per request")
        out["phases"][label.strip()] = {"ms": round(ms, 3), "calls": round(calls / requests, 2)}
    return out
