"""Where each benchmark store lives, and the chores around it: create, migrate, count, analyze."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from fhir_bridge.store.db import make_engine

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_ADMIN_DB = "test"
BACKENDS = ("sqlite", "postgresql")


def parse_scale(scale: str) -> int:
    """``10k`` -> 10_000, ``1m`` -> 1_000_000, ``2500`` -> 2_500."""
    s = scale.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(s[-1:], 1)
    return int(float(s.rstrip("km")) * factor)


def database_url(backend: str, scale: str) -> str:
    """The store URL of one backend at one scale (a file or a dedicated PostgreSQL database)."""
    name = f"fhir_bridge_bench_{scale.lower()}"
    if backend == "sqlite":
        return f"sqlite:///{DATA_DIR / (name + '.db')}"
    if backend == "postgresql":
        return f"{PG_SERVER}/{name}"
    raise ValueError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if missing (SQLite files create themselves)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return
    name = parsed.database
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"unexpected database name {name!r}")
    admin = make_engine(str(parsed.set(database=PG_ADMIN_DB)), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if not found:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()


def count_resources(engine: Engine) -> int:
    """Rows of table ``resource`` of the data set (0 when the schema is not there yet): not
    the AuditEvents the bridge wrote while being measured (``bench.auth`` leaves ~600, which
    made ``bench.run`` after it aim at patients that do not exist)."""
    query = "SELECT count(*) FROM resource WHERE resource_type <> 'AuditEvent'"
    with engine.connect() as conn:
        try:
            return int(conn.execute(text(query)).scalar() or 0)
        except Exception:
            return 0


def analyze(engine: Engine) -> None:
    """Refresh the planner statistics (``ANALYZE`` on both backends)."""
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
