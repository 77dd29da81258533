"""Migration 0005: ``delivery.first_failed_at`` added (back-filled when failing), removed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Connection, inspect, text

from fhir_bridge.store.db import make_engine
from fhir_bridge.store.migrate import alembic_config, upgrade

_ROWS = """
INSERT INTO outbox_event (pk, created_at, event_type, resource_type, resource_id, version_id,
                          patient_id, detail)
VALUES (1, '2026-12-01 08:00:00', 'session.documented', 'Procedure', 'p1', 1, 'a', '{}');
INSERT INTO partner (pk, key, name, kind, base_url, events, identifiers, auth_kind, auth,
                     enabled, created_at, updated_at)
VALUES (1, 'p1', 'p1', 'physician', 'http://x/fhir', '[]', '[]', 'none', '{}', 1,
        '2026-12-01 08:00:00', '2026-12-01 08:00:00');
"""


def _delivery(conn: Connection, pk: int, status: str, error: str | None) -> None:
    conn.execute(
        text(
            "INSERT INTO delivery (pk, partner_pk, outbox_pk, event_type, status, attempts,"
            " next_attempt_at, last_attempt_at, last_error, created_at)"
            " VALUES (:pk, 1, :outbox, 'session.documented', :status, 1,"
            " '2026-12-01 10:00:00', '2026-12-01 09:00:00', :error, '2026-12-01 08:00:00')"
        ),
        {"pk": pk, "outbox": pk, "status": status, "error": error},
    )


def test_0005_adds_backfills_and_drops_first_failed_at(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        upgrade(engine, "0004")
        with engine.begin() as conn:
            for statement in _ROWS.split(";"):
                if statement.strip():
                    conn.execute(text(statement))
            _delivery(conn, 1, "pending", "partner answered HTTP 503")
        upgrade(engine, "0005")
        with engine.connect() as conn:
            found = conn.execute(text("SELECT first_failed_at FROM delivery")).scalar_one()
        assert str(found).startswith("2026-12-01 09:00:00")
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        columns = {c["name"] for c in inspect(engine).get_columns("delivery")}
        assert "first_failed_at" not in columns
    finally:
        engine.dispose()
