"""Snapshot sequence numbers: the "as of" point that keeps search paging stable under writes.

A search's snapshot ``S`` is the highest version pk such that every write with a pk <= S has
committed. Paging "as of S" then never skips or repeats an entry. On SQLite writers are
serialized and a reader's WAL snapshot gives this for free. On PostgreSQL sequence values are
handed out before commit, so writers hold a shared advisory lock for their transaction and the
snapshot reader briefly takes it exclusively: it waits for in-flight writes to finish, and any
write that starts afterwards gets a larger pk.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from fhir_bridge.store.models import ResourceVersion

#: Advisory lock key ("fhirbrid" in ASCII) shared by all bridge processes on one database.
WRITE_SEQUENCE_LOCK = 0x6668697262726964


def hold_write_lock(session: Session) -> None:
    """Mark this transaction as a writer (PostgreSQL: shared advisory lock until commit)."""
    if session.get_bind().dialect.name != "postgresql" or session.info.get("write_lock"):
        return
    session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": WRITE_SEQUENCE_LOCK})
    session.info["write_lock"] = True
    # the flag belongs to this transaction only
    from sqlalchemy import event

    @event.listens_for(session, "after_transaction_end", once=True)
    def _clear(sess, _trans) -> None:
        sess.info.pop("write_lock", None)


def current_sequence(session: Session) -> int:
    """The snapshot sequence number as of now (0 for an empty store)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_lock(:k)"), {"k": WRITE_SEQUENCE_LOCK})
        value = _read_and_unlock(session)
    else:
        value = session.execute(select(func.max(ResourceVersion.pk))).scalar()
    return int(value or 0)


def current_sequence_probing(
    session: Session, probe: str, params: dict[str, object]
) -> tuple[int, bool]:
    """``current_sequence`` and a boolean SQL expression evaluated in the same round trips.

    PostgreSQL only: ``probe`` (``%(name)s`` marks, as psycopg takes them) rides along with
    the advisory lock request as a server-side prepared statement, so a check that would cost
    its own round trip costs none. The snapshot is read exactly as ``current_sequence`` does.
    """
    raw = session.connection().connection.dbapi_connection
    try:
        row = raw.execute(
            f"SELECT pg_advisory_lock(%(sequence_lock)s), {probe}",
            {**params, "sequence_lock": WRITE_SEQUENCE_LOCK},
            prepare=True,
        ).fetchone()
    except Exception:
        _unlock_after_failure(session)
        raise
    return int(_read_and_unlock(session) or 0), bool(row[1])


def _read_and_unlock(session: Session) -> int | None:
    """The highest version pk, read in the statement that releases the snapshot lock (its
    snapshot is taken after the lock was granted)."""
    try:
        return session.execute(
            select(func.max(ResourceVersion.pk), func.pg_advisory_unlock(WRITE_SEQUENCE_LOCK))
        ).first()[0]
    except Exception:
        _unlock_after_failure(session)
        raise


def _unlock_after_failure(session: Session) -> None:
    """The lock is session-level: never leave it on a pooled connection."""
    session.rollback()
    session.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": WRITE_SEQUENCE_LOCK})
