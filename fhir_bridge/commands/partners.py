"""``fhir-bridge partners``: register, list, show, update, enable and disable delivery partners.

Partners are physicians' EHRs and payers' FHIR servers. Secrets are never stored: ``add``
records the name of the environment variable or the path of the file holding the token or
private key, and ``list``/``show`` never print even that (only the auth kind and the SMART
client id, token URL, algorithm and scopes).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from fhir_bridge.settings import Settings, SettingsError
from fhir_bridge.store.outbox import EVENT_TYPES
from fhir_bridge.store.partners import AUTH_KINDS, BUNDLE_TYPES, KINDS

if TYPE_CHECKING:
    from fhir_bridge.services.runtime import Runtime

#: CLI spelling of each spec field, for error messages
_OPTION = {
    "key": "KEY",
    "events": "--event",
    "identifier": "--identifier",
    "auth": "--auth",
    "scopes": "--scope",
}


def _runtime() -> Runtime:
    from fhir_bridge.services.runtime import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _option(field_name: str) -> str:
    return _OPTION.get(field_name, "--" + field_name.replace("_", "-"))


def _max_entries(value: str | None) -> int | None:
    """``--max-bundle-entries``: a whole number, or ``unlimited``/None."""
    if value is None or value.strip().lower() in ("unlimited", "none", ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a whole number or 'unlimited'", param_hint="--max-bundle-entries"
        ) from None


_MAX_HELP = (
    "The most entries the partner takes in one Bundle (e.g. 8 for a Medplum server), or "
    "'unlimited' (default). A larger delivery goes as several ordered Bundles."
)
_TYPE_HELP = "transaction (default) or batch: the Bundle type the partner wants."


@click.group("partners")
def partners() -> None:
    """Delivery partners: physicians' EHRs and payers' FHIR servers."""


@partners.command("add")
@click.argument("key")
@click.option("--name", required=True, help="Display name (Northside Family Medicine).")
@click.option("--kind", required=True, type=click.Choice(KINDS), help="physician | payer")
@click.option("--base-url", required=True, help="The partner's FHIR base URL (http or https).")
@click.option(
    "--event",
    "events",
    multiple=True,
    metavar="TYPE",
    help="An event type to deliver (repeatable). Default: physician: all referral.*, "
    "session.documented and report.generated; payer: session.documented. "
    f"Types: {', '.join(EVENT_TYPES)}; "
    "poll-referrals (physicians) asks `fhir-bridge poll` to pull referrals from the server.",
)
@click.option(
    "--poll",
    is_flag=True,
    help="physician: also poll its server for referrals addressed to the clinic "
    "(adds poll-referrals to the events; see `fhir-bridge poll`).",
)
@click.option(
    "--identifier",
    "identifiers",
    multiple=True,
    metavar="SYSTEM|VALUE",
    help="An identifier the partner is known by (repeatable), e.g. "
    "http://hl7.org/fhir/sid/us-npi|1407071236 or https://payers.example.org/payer-id|ACME.",
)
@click.option("--auth", "auth_kind", required=True, type=click.Choice(AUTH_KINDS))
@click.option("--token-env", metavar="NAME", help="bearer: environment variable with the token.")
@click.option("--token-file", metavar="PATH", help="bearer: file holding the token.")
@click.option("--client-id", help="smart: the bridge's client id at the partner.")
@click.option("--token-url", help="smart: the partner's OAuth token endpoint (https).")
@click.option("--key-env", metavar="NAME", help="smart: environment variable with the PEM key.")
@click.option("--key-file", metavar="PATH", help="smart: file holding the PEM private key.")
@click.option("--alg", help="smart: signing algorithm (RS384 | ES384).")
@click.option("--scope", "scopes", multiple=True, help="smart: a scope to request (repeatable).")
@click.option("--kid", help="smart: key id for the JWT header (optional).")
@click.option("--max-bundle-entries", "max_entries", metavar="N|unlimited", help=_MAX_HELP)
@click.option(
    "--bundle-type", type=click.Choice(BUNDLE_TYPES), default="transaction", help=_TYPE_HELP
)
def add(
    key: str,
    name: str,
    kind: str,
    base_url: str,
    events: tuple[str, ...],
    identifiers: tuple[str, ...],
    auth_kind: str,
    token_env: str | None,
    token_file: str | None,
    client_id: str | None,
    token_url: str | None,
    key_env: str | None,
    key_file: str | None,
    alg: str | None,
    scopes: tuple[str, ...],
    kid: str | None,
    poll: bool,
    max_entries: str | None,
    bundle_type: str,
) -> None:
    """Register partner KEY (enabled at once). Stores where secrets live, never the secrets."""
    from fhir_bridge.services import partners as service

    spec = service.PartnerSpec(
        key=key,
        name=name,
        kind=kind,
        base_url=base_url,
        auth_kind=auth_kind,
        events=events,
        identifiers=identifiers,
        token_env=token_env,
        token_file=token_file,
        client_id=client_id,
        token_url=token_url,
        key_env=key_env,
        key_file=key_file,
        alg=alg,
        scopes=scopes,
        kid=kid,
        poll=poll,
        max_bundle_entries=_max_entries(max_entries),
        bundle_type=bundle_type,
    )
    rt = _runtime()
    try:
        valid = service.validate(spec, payer_id_system=rt.settings.payer_id_system)
        for note in valid.warnings:
            click.echo(f"warning: {note}", err=True)
        row = service.add_partner(rt, valid)
    except service.PartnerInvalid as exc:
        raise click.UsageError(
            "\n".join(f"{_option(p.field)}: {p.message}" for p in exc.problems)
        ) from None
    except service.PartnerExists as exc:
        raise click.ClickException(
            f"{exc}; see `fhir-bridge partners show {exc.key}`, or choose another key"
        ) from None
    finally:
        rt.dispose()
    delivered = [e for e in row.events if e != service.POLL_EVENT]
    polled = ", polled for referrals" if service.POLL_EVENT in row.events else ""
    click.echo(
        f"partner {row.key} added ({row.kind}, {len(delivered)} event types{polled}, "
        f"auth {row.auth_kind}, enabled)"
    )


@partners.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the `show` view).")
def list_(as_json: bool) -> None:
    """A table of every partner: key, kind, name, base URL, events, auth, enabled."""
    from fhir_bridge.services import partners as service

    rt = _runtime()
    try:
        rows = service.list_partners(rt)
    finally:
        rt.dispose()
    if as_json:
        for row in rows:
            click.echo(json.dumps(service.partner_view(row), ensure_ascii=False))
        return
    if not rows:
        click.echo("no partners registered")
        return
    table = [("KEY", "KIND", "NAME", "BASE URL", "EVENTS", "AUTH", "ENABLED")]
    table += [
        (
            p.key,
            p.kind,
            p.name,
            p.base_url,
            str(len(p.events)),
            p.auth_kind,
            "yes" if p.enabled else "no",
        )
        for p in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@partners.command("show")
@click.argument("key")
def show(key: str) -> None:
    """Partner KEY as JSON (the same view as GET /api/v1/partners/KEY; no secret locations)."""
    from fhir_bridge.services import partners as service

    rt = _runtime()
    try:
        row = service.find_partner(rt, key)
    finally:
        rt.dispose()
    if row is None:
        raise click.ClickException(f"no partner with key {key!r}")
    click.echo(json.dumps(service.partner_view(row), indent=2, ensure_ascii=False))


@partners.command("update")
@click.argument("key")
@click.option("--max-bundle-entries", "max_entries", metavar="N|unlimited", help=_MAX_HELP)
@click.option("--bundle-type", type=click.Choice(BUNDLE_TYPES), help=_TYPE_HELP)
def update_(key: str, max_entries: str | None, bundle_type: str | None) -> None:
    """Change partner KEY's delivery shape (options not given keep their value); deliveries
    not yet sent take it."""
    from fhir_bridge.services import partners as service

    if max_entries is None and bundle_type is None:
        raise click.UsageError("nothing to change: give --max-bundle-entries or --bundle-type")
    rt = _runtime()
    try:
        row = service.find_partner(rt, key)
        if row is None:
            raise click.ClickException(f"no partner with key {key!r}")
        row = service.set_delivery_shape(
            rt,
            key,
            max_bundle_entries=(
                row.max_bundle_entries if max_entries is None else _max_entries(max_entries)
            ),
            bundle_type=bundle_type or row.bundle_type,
        )
    except service.PartnerInvalid as exc:
        raise click.UsageError(
            "\n".join(f"{_option(p.field)}: {p.message}" for p in exc.problems)
        ) from None
    except service.UnknownPartner as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rt.dispose()
    limit = row.max_bundle_entries or "unlimited"
    click.echo(f"partner {key} updated ({row.bundle_type}, max {limit} entries per Bundle)")


def _switch(key: str, enabled: bool) -> None:
    from fhir_bridge.services import partners as service

    rt = _runtime()
    try:
        _, changed = service.set_enabled(rt, key, enabled)
    except service.UnknownPartner as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rt.dispose()
    state = "enabled" if enabled else "disabled"
    click.echo(f"partner {key} {state}" if changed else f"partner {key} was already {state}")


@partners.command("disable")
@click.argument("key")
def disable(key: str) -> None:
    """Stop delivering to partner KEY until it is enabled again."""
    _switch(key, False)


@partners.command("enable")
@click.argument("key")
def enable(key: str) -> None:
    """Deliver to partner KEY again."""
    _switch(key, True)
