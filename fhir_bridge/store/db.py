"""Engines and transactions for SQLite (embedded, WAL) and PostgreSQL (scale-out)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: psycopg prepares a statement after this many runs: in effect never (None would also refuse
#: the statements that ask to be prepared)
NEVER_AUTOMATICALLY = 2**31 - 1


def make_engine(database_url: str, **kwargs: object) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a busy timeout and explicit BEGINs.

    Bound parameters are never part of an error's text (``hide_parameters``): they are
    patients' identifiers, names and records, and error texts end up in logs.
    """
    kwargs.setdefault("hide_parameters", True)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(database_url, **kwargs)
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    kwargs.setdefault("pool_pre_ping", True)
    if url.drivername == "postgresql+psycopg":
        # No server-side prepared statements: after five runs psycopg prepares a statement,
        # and PostgreSQL then may settle on a generic plan that ignores the actual values
        # (measured: identifier look-ups of a session went from ~1 ms to ~25 ms that way).
        connect_args = dict(kwargs.pop("connect_args", None) or {})  # type: ignore[call-overload]
        # Never automatically, that is; a query that asks (``prepare=True``) still may: the
        # member check of store/member_scope.py, whose plan does not depend on its values.
        connect_args.setdefault("prepare_threshold", NEVER_AUTOMATICALLY)
        kwargs["connect_args"] = connect_args
    return create_engine(url, **kwargs)


def _sqlite_engine(database_url: str, **kwargs: object) -> Engine:
    url = make_url(database_url)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (pysqlite's implicit
        # BEGIN breaks SAVEPOINT and lets a write start as a reader, which can deadlock).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Page cache (64 MiB) and memory-mapped reads (256 MiB) per connection: at a million
        # resources the index pages of a search no longer fit SQLite's 2 MiB default.
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # Writers take the write lock up front (BEGIN IMMEDIATE) so two writers queue on the
        # busy timeout instead of failing with "database is locked" when a reader upgrades.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def is_postgres(engine_or_session: Engine | Session) -> bool:
    """True when the bound database is PostgreSQL."""
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that never expire objects on commit (the store hands out plain values)."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextmanager
def read_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads. It ends with COMMIT (nothing was written, so it is the same as a
    rollback) because psycopg forgets every prepared statement on ROLLBACK; on an error it
    rolls back."""
    with factory() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


class StatementTimeout(Exception):
    """A read ran past its deadline and was cancelled by the database."""


@contextmanager
def deadline(session: Session, seconds: float) -> Iterator[None]:
    """Cancel the session's statements that run past ``seconds`` (StatementTimeout).

    PostgreSQL: ``SET LOCAL statement_timeout`` for the transaction. SQLite: a progress
    handler that interrupts the running statement once the deadline has passed.
    """
    if seconds <= 0:
        yield
        return
    if is_postgres(session):
        session.execute(text(f"SET LOCAL statement_timeout = {int(seconds * 1000)}"))
        try:
            yield
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "57014":  # query_canceled
                raise StatementTimeout from None
            raise
        return
    raw = session.connection().connection.dbapi_connection
    stop_at = time.monotonic() + seconds
    raw.set_progress_handler(lambda: int(time.monotonic() > stop_at), 10_000)
    try:
        yield
    except OperationalError as exc:
        if "interrupted" in str(exc.orig):
            raise StatementTimeout from None
        raise
    finally:
        raw.set_progress_handler(None, 0)


_held = threading.local()


@contextmanager
def _writer_turn(session: Session) -> Iterator[None]:
    """SQLite writers of one file take turns in a kernel queue, not in busy-timeout sleeps.

    A writer that finds SQLite's write lock taken polls with sleeps of up to 100 ms, so a
    busy store idles between writes and the unlucky wait long. An exclusive flock on
    ``<database>-writer.lock`` held across BEGIN IMMEDIATE ... COMMIT wakes the next writer
    (any thread, any process) as soon as the previous one is done. The database file itself
    is never opened here: closing it would drop SQLite's own POSIX locks.
    """
    database = session.get_bind().url.database
    if (
        not database
        or database == ":memory:"
        or database.startswith("file:")
        or getattr(_held, "turn", False)  # nested in this thread's own turn
    ):
        yield
        return
    fd = os.open(os.path.abspath(database) + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one open file per turn: threads exclude each other too
        _held.turn = True
        try:
            yield
        finally:
            _held.turn = False
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def write_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One atomic write: commits when the block ends cleanly, rolls back on any exception."""
    session = factory()
    sqlite = session.get_bind().dialect.name == "sqlite"
    with _writer_turn(session) if sqlite else nullcontext():
        if sqlite:
            session.connection(execution_options={"sqlite_immediate": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
