"""``fhir-bridge worker`` (send deliveries) and ``fhir-bridge deliveries retry --dead``.

On SQLite run exactly one worker: SQLite serialises writers, and the bridge's claim takes no
row locks there. ``worker`` holds an exclusive lock file beside the database
(``<db>.worker.lock``) and refuses to start when another worker holds it. On PostgreSQL run as
many workers as you like (claims use ``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from fhir_bridge.settings import Settings, SettingsError

if TYPE_CHECKING:
    from fhir_bridge.services.runtime import Runtime

ALERT_WEBHOOK_ENV = "FHIR_BRIDGE_ALERT_WEBHOOK_URL"


def _runtime() -> Runtime:
    from fhir_bridge.services.runtime import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def sqlite_lock_path(database_url: str) -> Path | None:
    """The worker lock file of a file-backed SQLite database (None otherwise)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).with_name(Path(url.database).name + ".worker.lock")


@contextmanager
def single_worker(database_url: str) -> Iterator[None]:
    """On SQLite, hold the worker lock for the block; ClickException if another worker has it."""
    path = sqlite_lock_path(database_url)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    handle: TextIO = path.open("w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(
                "another delivery worker is already running on this SQLite database; SQLite "
                "supports exactly one worker (use PostgreSQL to run several)"
            ) from None
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


@click.command("worker")
@click.option("--once", is_flag=True, help="Run one cycle (route, claim, send) and exit.")
@click.option(
    "--workers-id",
    "worker_id",
    default=None,
    help="This worker's name in logs and alerts (default host:pid).",
)
@click.option(
    "--alert-webhook",
    envvar=ALERT_WEBHOOK_ENV,
    default=None,
    help=f"URL to POST a JSON alert to when a partner starts failing (env {ALERT_WEBHOOK_ENV}).",
)
def worker(once: bool, worker_id: str | None, alert_webhook: str | None) -> None:
    """Deliver outbox events to partners' FHIR servers until stopped (SIGTERM, Ctrl-C)."""
    from fhir_bridge.exchange.worker import Worker
    from fhir_bridge.logs import configure_logging

    rt = _runtime()
    settings = rt.settings
    if not settings.testing:
        configure_logging(settings.log_level, json=settings.log_json)
    stop = threading.Event()
    name = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    try:
        with single_worker(settings.database_url):
            runner = Worker(
                rt,
                worker_id=name,
                clock=_utcnow,
                sleep=stop.wait,
                timeout=float(settings.fetch_timeout_seconds),
                alert_webhook=alert_webhook,
            )
            if once:
                click.echo(f"{runner.run_once()} deliveries attempted")
                return
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            click.echo(f"delivery worker {name} started", err=True)
            runner.run_forever(stop)
    finally:
        rt.dispose()


@click.group("deliveries")
def deliveries() -> None:
    """Deliveries to partners: retry dead letters."""


@deliveries.command("retry")
@click.option("--dead", is_flag=True, help="Requeue dead letters (required: the only mode).")
@click.option("--partner", "partner_key", default=None, help="Only this partner's (its key).")
def retry(dead: bool, partner_key: str | None) -> None:
    """Put dead deliveries back in the queue, due at once (attempts start again at 0)."""
    from fhir_bridge.store.db import write_session
    from fhir_bridge.store.delivery_queue import requeue_dead
    from fhir_bridge.store.partners import PartnerStore

    if not dead:
        raise click.UsageError("say which deliveries to retry: --dead")
    rt = _runtime()
    try:
        with write_session(rt.sessions) as session:
            partner_pk = None
            if partner_key is not None:
                partner = PartnerStore(session).get(partner_key)
                if partner is None:
                    raise click.ClickException(f"no partner with key {partner_key!r}")
                partner_pk = partner.pk
            count = requeue_dead(session, partner_pk=partner_pk, now=_utcnow())
    finally:
        rt.dispose()
    click.echo(f"{count} dead deliveries requeued")
