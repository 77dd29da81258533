"""``fhir-bridge poll``: pull referrals from physicians' servers that do not push them.

Polls every enabled physician partner registered with ``--poll`` (events include
``poll-referrals``), or the one ``--partner`` names; see ``services.referral_poll``. Prints one
line per partner (counts only) and, with ``--once``, exits 1 when a partner could not be polled
to the end, so a cron job notices.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

import click

from fhir_bridge.settings import Settings, SettingsError

if TYPE_CHECKING:
    from fhir_bridge.services.referral_poll import Poller
    from fhir_bridge.services.runtime import Runtime


def _runtime() -> Runtime:
    from fhir_bridge.services.runtime import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def make_poller(rt: Runtime, *, page_size: int) -> Poller:
    """A Poller on the configured mapping tables; ClickException when they are broken."""
    from fhir_bridge.app import load_configured_tables
    from fhir_bridge.mapping.tables import MappingError
    from fhir_bridge.services.referral_poll import Poller

    try:
        tables = load_configured_tables(rt.settings)
    except MappingError as exc:
        raise click.ClickException(f"mapping tables: {exc}") from None
    return Poller(rt, tables, page_size=page_size)


@click.command("poll")
@click.option("--once", is_flag=True, help="Poll every partner once and exit.")
@click.option("--partner", "partner_key", default=None, help="Only this partner (its key).")
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Seconds between cycles (without --once).",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="_count asked of the partner's server.",
)
def poll(once: bool, partner_key: str | None, every: float, page_size: int) -> None:
    """Take in new referrals (ServiceRequests, fulfil Tasks) addressed to the clinic from the
    servers of physician partners registered with --poll."""
    from fhir_bridge.logs import configure_logging
    from fhir_bridge.services.referral_poll import NotPollable

    rt = _runtime()
    settings = rt.settings
    if not settings.testing:
        configure_logging(settings.log_level, json=settings.log_json)
    try:
        poller = make_poller(rt, page_size=page_size)
        try:
            poller.partners(partner_key)
        except NotPollable as exc:
            raise click.ClickException(str(exc)) from None
        if once:
            results = poller.poll_all(partner_key)
            if not results:
                click.echo("no partner is polled (register one with `partners add ... --poll`)")
            for result in results:
                click.echo(result.summary())
            if not all(r.ok for r in results):
                raise SystemExit(1)
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        click.echo(f"polling every {every:g} s", err=True)
        while not stop.is_set():
            try:
                for result in poller.poll_all(partner_key):
                    click.echo(result.summary())
            except NotPollable as exc:  # disabled or removed since start
                click.echo(f"warning: {exc}", err=True)
            except Exception as exc:  # the database is down ...: try again next cycle
                click.echo(f"poll cycle failed ({type(exc).__name__})", err=True)
            stop.wait(every)
    finally:
        rt.dispose()
