"""Engines and transactions for SQLite (embedded, WAL) and PostgreSQL (scale-out)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(database_url: str, **kwargs: object) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a busy timeout and explicit BEGINs."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(database_url, **kwargs)
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    kwargs.setdefault("pool_pre_ping", True)
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
    """A session for reads; rolled back (never committed) on exit."""
    with factory() as session:
        try:
            yield session
        finally:
            session.rollback()


@contextmanager
def write_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One atomic write: commits when the block ends cleanly, rolls back on any exception."""
    session = factory()
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={"sqlite_immediate": True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
