"""``fhir-bridge demo-data``: sample referrals and visits for ``make run``, through the API.

Each sample is POSTed to the running app's own endpoints in-process (the same intake and
session services as a real EHR or practice system), so the console shows an inbox, visits
and charts right away. Development only: the requests act as the development admin.
"""

from __future__ import annotations

from pathlib import Path

import click

from fhir_bridge.settings import Settings, SettingsError

#: sample referrals that need no remote server (the ``remote`` ones fetch from an EHR)
REFERRAL_FILES = (
    "whiplash-transaction.json",
    "lymphedema-servicerequest.json",
    "task-with-servicerequest.json",
    "vendor-extensions.json",
)


def _post(client, path: str, body: bytes, content_type: str) -> int:
    return client.post(path, data=body, headers={"Content-Type": content_type}).status_code


def _target(body: bytes) -> str:
    head = body[:400].decode("utf-8", "replace")
    for kind in ("Bundle", "ServiceRequest", "Task"):
        if f'"resourceType": "{kind}"' in head or f'"resourceType":"{kind}"' in head:
            return "/fhir" if kind == "Bundle" else f"/fhir/{kind}"
    return "/fhir"


@click.command("demo-data")
@click.argument(
    "folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default="sample_bundles",
)
@click.option("--if-empty", is_flag=True, help="Do nothing when a referral is already on file.")
def demo_data(folder: Path, if_empty: bool) -> None:
    """POST FOLDER/referrals/*.json and FOLDER/sessions/*.json through the API."""
    from fhir_bridge.app import create_app
    from fhir_bridge.services import referrals
    from fhir_bridge.store.referrals import ReferralFilter

    try:
        settings = Settings.from_env(dev_open_access=True, log_level="WARNING")
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(settings)
    rt = app.extensions["fhir_bridge"]
    if if_empty and referrals.list_referrals(rt, ReferralFilter(limit=1)):
        click.echo("referrals on file; demo data left as it is")
        return
    client = app.test_client()
    done = 0
    for name in REFERRAL_FILES:
        path = folder / "referrals" / name
        if path.exists():
            body = path.read_bytes()
            status = _post(client, _target(body), body, "application/fhir+json")
            done += status < 300
            click.echo(f"referral {name}: HTTP {status}")
    for path in sorted((folder / "sessions").glob("*.json")):
        status = _post(client, "/api/v1/sessions", path.read_bytes(), "application/json")
        done += status < 300
        click.echo(f"visit {path.name}: HTTP {status}")
    app.extensions["fhir_bridge_audit"].close()
    rt.dispose()
    click.echo(f"{done} sample requests accepted")
