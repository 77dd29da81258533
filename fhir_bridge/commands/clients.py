"""``fhir-bridge clients``: register, list, enable and disable the FHIR API's system clients.

A client registers its public keys (a JWKS file or the URL it publishes them at) and gets a
role: ``ehr`` (a physician's system, for one Organization), ``payer`` (for its payer
Organization), ``clinic`` (the practice-management system) or ``admin``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fhir_bridge.security.principal import ROLES
from fhir_bridge.settings import Settings, SettingsError


def _runtime():
    from fhir_bridge.services.runtime import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("clients")
def clients() -> None:
    """System clients of the FHIR API (SMART Backend Services)."""


@clients.command("add")
@click.argument("client_id")
@click.option("--name", required=True, help="Display name (Acme Health Plan claims review).")
@click.option(
    "--role", required=True, type=click.Choice(ROLES), help="ehr | payer | clinic | admin"
)
@click.option("--organization", default=None, help="Organization/<id> an ehr or payer acts for.")
@click.option("--scope", "scopes", default=None, help="Allowed scopes (space-separated).")
@click.option(
    "--jwks-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None
)
@click.option("--jwks-url", default=None, help="Where the client publishes its JWKS.")
@click.option(
    "--npi",
    "npis",
    multiple=True,
    help="An NPI the ehr client speaks for (repeat): referrals it sends must name one of them.",
)
def add(
    client_id: str,
    name: str,
    role: str,
    organization: str | None,
    scopes: str | None,
    jwks_file: Path | None,
    jwks_url: str | None,
    npis: tuple[str, ...],
) -> None:
    """Register a client with its public keys."""
    from fhir_bridge.services.clients import ClientSpecError, add_client
    from fhir_bridge.store.clients import ClientExists

    rt = _runtime()
    try:
        row = add_client(
            rt,
            client_id=client_id,
            name=name,
            role=role,
            organization=organization,
            scopes=scopes,
            jwks_text=jwks_file.read_text() if jwks_file else None,
            jwks_url=jwks_url,
            npis=npis,
        )
    except ClientSpecError as exc:
        raise click.UsageError(str(exc)) from None
    except ClientExists:
        raise click.ClickException(f"client {client_id} is already registered") from None
    finally:
        rt.dispose()
    click.echo(json.dumps(row.public(), indent=2))


@clients.command("list")
def list_() -> None:
    """Every client, as JSON lines (no key material)."""
    from fhir_bridge.services.clients import list_clients

    rt = _runtime()
    try:
        for row in list_clients(rt):
            click.echo(json.dumps(row.public()))
    finally:
        rt.dispose()


@clients.command("update")
@click.argument("client_id")
@click.option("--organization", default=None, help="Organization/<id> the client acts for.")
@click.option("--npi", "npis", multiple=True, help="NPIs it speaks for (replaces the list).")
@click.option("--clear-npis", is_flag=True, help="Speak for no practitioner.")
def update(client_id: str, organization: str | None, npis: tuple[str, ...], clear_npis: bool):
    """Change the Organization or the NPIs an ehr or payer client acts for."""
    from fhir_bridge.services.clients import ClientSpecError, update_client

    rt = _runtime()
    try:
        row = update_client(
            rt,
            client_id,
            organization=organization,
            npis=() if clear_npis else (npis or None),
        )
    except ClientSpecError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        rt.dispose()
    if row is None:
        raise click.ClickException(f"no client {client_id}")
    click.echo(json.dumps(row.public(), indent=2))


def _set(client_id: str, enabled: bool) -> None:
    from fhir_bridge.services.clients import set_enabled

    rt = _runtime()
    try:
        if not set_enabled(rt, client_id, enabled):
            raise click.ClickException(f"no client {client_id}")
    finally:
        rt.dispose()
    click.echo(f"{client_id} {'enabled' if enabled else 'disabled'}")


@clients.command("disable")
@click.argument("client_id")
def disable(client_id: str) -> None:
    """Refuse new tokens to the client (issued ones expire within 5 minutes)."""
    _set(client_id, False)


@clients.command("enable")
@click.argument("client_id")
def enable(client_id: str) -> None:
    """Issue tokens to the client again."""
    _set(client_id, True)
