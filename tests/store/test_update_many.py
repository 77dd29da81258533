"""ResourceStore.update_many: what update() one item at a time does, in fewer statements."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from fhir_bridge.store.db import make_engine, read_session, write_session
from fhir_bridge.store.errors import DuplicateIdentifier
from fhir_bridge.store.models import IdentifierClaim, SearchToken
from fhir_bridge.store.repository import ResourceStore
from tests.factories import MRN, observation, patient


def _clock(start: datetime) -> Callable[[], datetime]:
    """A clock that ticks one second per reading."""
    ticks: Iterator[int] = iter(range(10_000))
    return lambda: start + timedelta(seconds=next(ticks))


def _scenario(prefix: str) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], list]]]:
    """Resources on file first, then a batch: unchanged, changed (+claim), re-created, new."""
    on_file = [
        patient(f"{prefix}1", f"{prefix}-M1", "Rivera", "Ana"),
        patient(f"{prefix}2", f"{prefix}-M2", "Okafor", "Chidi"),
        patient(f"{prefix}3", f"{prefix}-M3", "Nguyen", "Bao"),
    ]
    changed = patient(f"{prefix}2", f"{prefix}-M2", "Okafor", "Chidi", birth="1980-01-01")
    batch = [
        (patient(f"{prefix}1", f"{prefix}-M1", "Rivera", "Ana"), [(MRN, f"{prefix}-M1")]),
        (changed, [(MRN, f"{prefix}-M2"), (MRN, f"{prefix}-M2b")]),
        (patient(f"{prefix}3", f"{prefix}-M3", "Nguyen", "Bao"), []),
        (patient(f"{prefix}4", f"{prefix}-M4", "Silva", "Rui"), [(MRN, f"{prefix}-M4")] * 2),
        (observation(f"{prefix}o", f"Patient/{prefix}4"), []),
    ]
    return on_file, batch


def _run(runtime, prefix: str, batched: bool) -> list[tuple[Any, ...]]:
    on_file, batch = _scenario(prefix)
    start = datetime(2026, 11, 28, 12, 0, 0)
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session, now=_clock(start))
        for r in on_file:
            store.update(r, claim_identifiers=[(MRN, r["identifier"][0]["value"])])
        store.delete("Patient", f"{prefix}3")
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session, now=_clock(start + timedelta(hours=1)))
        if batched:
            results = store.update_many(batch)
        else:
            results = [store.update(r, claim_identifiers=c) for r, c in batch]
    out = []
    for stored, created in results:
        body = stored.content.decode().replace(prefix, "")
        out.append((stored.resource_type, stored.version_id, stored.last_updated, created, body))
    with read_session(runtime.sessions) as session:
        store = ResourceStore(session)
        for r, _ in batch:
            history = store.history(r["resourceType"], r["id"])
            out.append(tuple((h.version_id, h.deleted, h.last_updated) for h in history))
        claims = session.execute(
            select(IdentifierClaim.value).where(IdentifierClaim.value.like(f"{prefix}-%"))
        ).scalars()
        out.append(tuple(sorted(v.removeprefix(prefix) for v in claims)))
        tokens = session.execute(
            select(SearchToken.param, func.count()).group_by(SearchToken.param)
        ).all()
        out.append(("tokens", len(tokens)))
    return out


def test_update_many_matches_updates_one_by_one(runtime):
    one_by_one = _run(runtime, "AAA", batched=False)
    batched = _run(runtime, "BBB", batched=True)
    assert batched == one_by_one
    # unchanged, changed, re-created over a deleted version, new, new
    assert [row[1] for row in batched[:5]] == [1, 2, 3, 1, 1]
    assert [row[3] for row in batched[:5]] == [False, False, False, True, True]


def test_update_many_version_pks_follow_item_order(runtime):
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        store.update(patient("p2", "M2", "Okafor", "Chidi"))
        results = store.update_many(
            [
                (patient("p1", "M1", "Rivera", "Ana"), []),
                (patient("p2", "M2", "Okafor", "Chidi", birth="1980-01-01"), []),
                (patient("p3", "M3", "Nguyen", "Bao"), []),
            ]
        )
    pks = [stored.version_pk for stored, _ in results]
    assert pks == sorted(pks)


def test_update_many_refuses_a_claim_another_resource_owns(runtime):
    with write_session(runtime.sessions) as session:
        owner = ResourceStore(session).create(
            patient("owner", "M1", "Rivera", "Ana"), claim_identifiers=[(MRN, "M1")]
        )
    with pytest.raises(DuplicateIdentifier) as exc, write_session(runtime.sessions) as session:
        ResourceStore(session).update_many(
            [
                (patient("fresh", "M9", "Silva", "Rui"), [(MRN, "M9")]),
                (patient("other", "M1", "Rivera", "Ana"), [(MRN, "M1")]),
            ]
        )
    assert exc.value.existing.resource_id == owner.resource_id
    with read_session(runtime.sessions) as session:
        assert ResourceStore(session).get("Patient", "fresh") is None  # all or nothing


def test_update_many_with_repeated_items_falls_back_to_one_by_one(runtime):
    with write_session(runtime.sessions) as session:
        results = ResourceStore(session).update_many(
            [
                (patient("p1", "M1", "Rivera", "Ana"), [(MRN, "M1")]),
                (patient("p1", "M1", "Rivera", "Ana", birth="1980-01-01"), [(MRN, "M1")]),
            ]
        )
    assert [(s.version_id, created) for s, created in results] == [(1, True), (2, False)]


def test_update_many_uses_a_handful_of_statements(runtime):
    batch = [(patient(f"p{i}", f"M{i}", "Rivera", "Ana"), [(MRN, f"M{i}")]) for i in range(8)]
    statements: list[object] = []

    def count(conn, clauseelement, multiparams, params, execution_options) -> None:
        statements.append(clauseelement)

    event.listen(runtime.engine, "before_execute", count)
    try:
        with write_session(runtime.sessions) as session:
            ResourceStore(session).update_many(batch)
    finally:
        event.remove(runtime.engine, "before_execute", count)
    # one by one: about 80 (SQLite runs a RETURNING batch a row at a time, in one call)
    assert len(statements) <= 12


def test_sqlite_writers_queue_on_the_writer_lock(tmp_path):
    from fhir_bridge.store.db import session_factory
    from fhir_bridge.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    inside = 0
    most = 0
    lock = threading.Lock()

    def write(n: int) -> None:
        nonlocal inside, most
        with write_session(sessions) as session:
            with lock:
                inside += 1
                most = max(most, inside)
            ResourceStore(session).create(patient(f"q{n}", f"Q{n}", "Rivera", "Ana"))
            with lock:
                inside -= 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert most == 1
    assert (tmp_path / "q.db-writer.lock").exists()
    with read_session(sessions) as session:
        assert len(ResourceStore(session).search_by_identifier("Patient", MRN, "Q3")) == 1
    engine.dispose()


def test_postgresql_connections_do_not_prepare_statements(runtime):
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("psycopg's prepared statements are PostgreSQL's")
    with runtime.engine.connect() as conn:
        for _ in range(20):  # psycopg's default would prepare after 5 runs
            conn.execute(text("SELECT count(*) FROM resource WHERE resource_id = :i"), {"i": "x"})
        prepared = conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
        assert prepared == 0
        # a statement that asks to be prepared (the member check) still is
        raw = conn.connection.driver_connection
        raw.execute("SELECT 1 WHERE %(a)s::text = 'a'", {"a": "a"}, prepare=True)
        prepared = conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
        assert prepared == 1
