"""The outbox holds one event per fact (resource version + event type), however many
transactions write it, one after the other or at the same time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import func, select

from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.models import OutboxEvent
from fhir_bridge.store.outbox import OutboxWriter
from fhir_bridge.store.repository import StoredResource

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC).replace(tzinfo=None)


def _procedure(version: int) -> StoredResource:
    return StoredResource("Procedure", "proc-1", version, NOW, False, b"{}", version)


def _count(runtime) -> list[tuple[str, int]]:
    with read_session(runtime.sessions) as s:
        rows = s.execute(
            select(OutboxEvent.event_type, OutboxEvent.version_id).order_by(OutboxEvent.pk)
        )
        return [tuple(r) for r in rows]


def _emit(runtime, event_type: str, version: int) -> bool:
    with write_session(runtime.sessions) as s:
        return OutboxWriter(s).emit(event_type, _procedure(version), at=NOW, patient_id="p")


def test_the_same_fact_twice_is_one_event(runtime):
    assert _emit(runtime, "session.documented", 1) is True
    assert _emit(runtime, "session.documented", 1) is False
    assert _count(runtime) == [("session.documented", 1)]


def test_another_version_or_event_type_is_another_fact(runtime):
    _emit(runtime, "session.documented", 1)
    _emit(runtime, "session.documented", 1)
    _emit(runtime, "session.documented", 2)
    _emit(runtime, "referral.visit-documented", 2)
    with read_session(runtime.sessions) as s:
        pks = list(s.scalars(select(OutboxEvent.pk).order_by(OutboxEvent.pk)))
    # the repeat took no id: no gap for the router to wait at
    assert pks == list(range(pks[0], pks[0] + 3))
    assert _count(runtime) == [
        ("session.documented", 1),
        ("session.documented", 2),
        ("referral.visit-documented", 2),
    ]


def test_concurrent_writers_of_one_fact_make_one_event(runtime):
    """Two transactions hold the same fact uncommitted: the second waits and adds nothing."""
    first_wrote = threading.Event()
    release_first = threading.Event()
    results: dict[str, bool] = {}

    def first() -> None:
        with write_session(runtime.sessions) as s:
            results["first"] = OutboxWriter(s).emit(
                "session.documented", _procedure(1), at=NOW, patient_id="p"
            )
            first_wrote.set()
            release_first.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_wrote.wait(10)
    second = threading.Thread(
        target=lambda: results.__setitem__("second", _emit(runtime, "session.documented", 1))
    )
    second.start()
    release_first.set()
    thread.join(10)
    second.join(10)
    assert results == {"first": True, "second": False}
    with read_session(runtime.sessions) as s:
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 1
