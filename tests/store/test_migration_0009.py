"""Migration 0009: repeated outbox events marked (not deleted) so one event per fact is unique;
each delivery's latest known attempt seeds its attempt history; the downgrade removes both."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from fhir_bridge.store.db import make_engine
from fhir_bridge.store.migrate import alembic_config, upgrade

_EVENT = (
    "INSERT INTO outbox_event (pk, created_at, event_type, resource_type, resource_id,"
    " version_id, patient_id, detail) VALUES (:pk, '2026-12-01 08:00:00', 'session.documented',"
    " 'Procedure', :rid, 1, 'a', '{}')"
)
_PARTNER = (
    "INSERT INTO partner (pk, key, name, kind, base_url, events, identifiers, auth_kind, auth,"
    " enabled, created_at, updated_at) VALUES (1, 'p1', 'p1', 'physician', 'http://x/fhir',"
    " '[]', '[]', 'none', '{}', true, '2026-12-01 08:00:00', '2026-12-01 08:00:00')"
)
_DELIVERY = (
    "INSERT INTO delivery (pk, partner_pk, outbox_pk, event_type, status, attempts,"
    " next_attempt_at, last_attempt_at, last_status, last_error, created_at)"
    " VALUES (:pk, 1, :outbox, 'session.documented', :status, 1, '2026-12-01 10:00:00',"
    " :last, :code, :error, '2026-12-01 08:00:00')"
)


def test_0009_marks_repeated_events_and_seeds_attempts(blank_database_url: str) -> None:
    engine = make_engine(blank_database_url)
    try:
        upgrade(engine, "0006")
        with engine.begin() as conn:
            # the same visit's event twice (two nodes), and another visit's event once
            for pk, rid in ((1, "p1"), (2, "p1"), (3, "p2")):
                conn.execute(text(_EVENT), {"pk": pk, "rid": rid})
            conn.execute(text(_PARTNER))
            for pk, status, last, code, error in (
                (1, "delivered", "2026-12-01 09:00:00", 200, None),
                (2, "pending", "2026-12-01 09:30:00", 503, "partner answered HTTP 503"),
                (3, "pending", None, None, None),
            ):
                conn.execute(
                    text(_DELIVERY),
                    {
                        "pk": pk,
                        "outbox": pk,
                        "status": status,
                        "last": last,
                        "code": code,
                        "error": error,
                    },
                )
        upgrade(engine, "0009")
        with engine.connect() as conn:
            marks = conn.execute(text("SELECT pk, duplicate_of FROM outbox_event ORDER BY pk"))
            assert marks.all() == [(1, None), (2, 1), (3, None)]
            attempts = conn.execute(
                text("SELECT delivery_pk, result, http_status, error FROM delivery_attempt")
            ).all()
            assert attempts == [
                (1, "delivered", 200, None),
                (2, "retry", 503, "partner answered HTTP 503"),
            ]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(_EVENT), {"pk": 4, "rid": "p2"})
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
        inspector = inspect(engine)
        assert "delivery_attempt" not in inspector.get_table_names()
        assert "duplicate_of" not in {c["name"] for c in inspector.get_columns("outbox_event")}
    finally:
        engine.dispose()
