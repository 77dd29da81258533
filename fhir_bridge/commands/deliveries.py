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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from fhir_bridge import tracing
from fhir_bridge.commands.export import start_export_runner
from fhir_bridge.settings import PREFIX, Settings, SettingsError

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


def _setting_option(
    flag: str, field: str, text: str, kind: type = float
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An option overriding Settings.``field`` (env FHIR_BRIDGE_``FIELD``); unset: the setting."""
    return click.option(
        flag, field, type=kind, default=None, help=f"{text} [env {PREFIX}{field.upper()}]"
    )


def _worker_settings(rt: Runtime, overrides: dict[str, Any], webhook: str | None) -> Settings:
    """The runtime's settings with the worker's command-line options applied (and checked)."""
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if webhook is not None:
        chosen["alert_webhook_url"] = webhook
    try:
        return replace(rt.settings, **chosen)
    except SettingsError as exc:
        rt.dispose()
        raise click.ClickException(f"{exc} (the worker's options override it)") from None


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
    default=None,
    help=f"URL to POST a JSON alert to when a partner starts failing (env {ALERT_WEBHOOK_ENV}).",
)
@click.option(
    "--poll-every",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Also poll physicians registered with --poll for referrals, at most this often "
    "(default: never; see `fhir-bridge poll`).",
)
@_setting_option("--backoff-base", "delivery_backoff_base_seconds", "First retry delay, s.")
@_setting_option("--backoff-cap", "delivery_backoff_cap_seconds", "Longest retry delay, s.")
@_setting_option("--give-up-hours", "delivery_give_up_hours", "Dead letter after failing so long.")
@_setting_option("--lease-seconds", "delivery_lease_seconds", "How long a claim holds a row.")
@_setting_option("--batch-size", "delivery_batch_size", "Deliveries claimed per cycle.", int)
@_setting_option("--idle-seconds", "worker_idle_seconds", "Pause after a cycle with nothing due.")
@_setting_option("--timeout", "delivery_timeout_seconds", "Seconds to wait for a partner.")
def worker(
    once: bool,
    worker_id: str | None,
    alert_webhook: str | None,
    poll_every: float | None,
    **overrides: Any,
) -> None:
    """Deliver outbox events to partners' FHIR servers until stopped (SIGTERM, Ctrl-C).

    The delivery options override their FHIR_BRIDGE_* settings (shown with each option).
    """
    from fhir_bridge.logs import configure_logging
    from fhir_bridge.outbox.pipeline import default_router, make_worker
    from fhir_bridge.outbox.worker import WorkerConfig

    rt = _runtime()
    settings = _worker_settings(rt, overrides, alert_webhook)
    if not settings.testing:
        configure_logging(settings.log_level, json=settings.log_json)
    stop = threading.Event()
    name = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    try:
        route = default_router
        if poll_every is not None:
            route = _polling_router(rt, poll_every)
        with single_worker(settings.database_url):
            config = WorkerConfig.from_settings(settings, worker_id=name)
            runner = make_worker(rt, config, clock=_utcnow, sleep=stop.wait, route=route)
            try:
                tracing.instrument_worker(runner, settings)  # FHIR_BRIDGE_OTEL=on: span per send
            except SettingsError as exc:  # on, but the otel extra is not installed
                raise click.ClickException(str(exc)) from None
            if once:
                click.echo(f"{runner.run_once()} deliveries attempted")
                return
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            click.echo(f"delivery worker {name} started", err=True)
            start_export_runner(rt, stop)  # Bulk Data $export jobs, in a thread of their own
            runner.run_forever(stop)
    finally:
        tracing.shutdown()  # export the last spans (no-op when tracing is off)
        rt.dispose()


def _polling_router(rt: Runtime, every: float) -> Callable[[Runtime], int]:
    """The worker's router, preceded at most every ``every`` seconds by a referral poll cycle
    (the worker calls its router at the start of every cycle)."""
    from fhir_bridge.commands.poll import make_poller
    from fhir_bridge.outbox.pipeline import default_router
    from fhir_bridge.services.referral_poll import PollSchedule

    poller = make_poller(rt, page_size=50)
    schedule = PollSchedule(poller.poll_all, every)

    def route(runtime: Runtime) -> int:
        schedule.run_if_due()
        return default_router(runtime)

    return route


@click.group("deliveries")
def deliveries() -> None:
    """Deliveries to partners: list them, show one with its attempts, retry dead letters."""


@deliveries.command("list")
@click.option("--partner", "partner_key", default=None, help="Only this partner's (its key).")
@click.option("--status", type=click.Choice(["pending", "delivered", "dead"]), default=None)
@click.option("--patient", default=None, help="Only this patient's (Patient/<id> or <id>).")
@click.option("--event", "event_type", default=None, help="Only this event type.")
@click.option("--since", default=None, help="Created at or after (ISO 8601 date or date-time).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(
    partner_key: str | None,
    status: str | None,
    patient: str | None,
    event_type: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Deliveries, newest first (never their payloads)."""
    import json

    from fhir_bridge.services import deliveries as service

    try:
        query = service.DeliveryQuery(
            partner_key=partner_key,
            status=status,
            patient=patient,
            event_type=event_type,
            since=service.parse_since(since),
            limit=limit,
        )
    except service.InvalidQuery as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.param}") from None
    rt = _runtime()
    try:
        rows = service.list_deliveries(rt, query)
    finally:
        rt.dispose()
    views = [service.delivery_view(row) for row in rows]
    if as_json:
        for view in views:
            click.echo(json.dumps(view, ensure_ascii=False))
        return
    if not views:
        click.echo("no deliveries")
        return
    columns = ("id", "partner", "event_type", "status", "attempts", "last_status", "created_at")
    table = [columns] + [tuple("" if v[c] is None else str(v[c]) for c in columns) for v in views]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@deliveries.command("show")
@click.argument("delivery_id", type=int)
def show(delivery_id: int) -> None:
    """One delivery as JSON, with every attempt made (``history``) and the partner's
    OperationOutcomes; never the payload."""
    import json

    from fhir_bridge.services import deliveries as service

    rt = _runtime()
    try:
        found, history = service.delivery_history(rt, delivery_id)
    except service.DeliveryNotFound:
        raise click.ClickException(f"no delivery {delivery_id}") from None
    finally:
        rt.dispose()
    view = service.delivery_view(found, detail=True, history=history)
    click.echo(json.dumps(view, indent=2, ensure_ascii=False))


@deliveries.command("retry")
@click.option("--dead", is_flag=True, help="Requeue dead letters (required: the only mode).")
@click.option("--partner", "partner_key", default=None, help="Only this partner's (its key).")
def retry(dead: bool, partner_key: str | None) -> None:
    """Put dead deliveries back in the queue, due at once (attempts start again at 0)."""
    from fhir_bridge.outbox.queue import requeue_dead
    from fhir_bridge.store.db import write_session
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
