"""The ``fhir-bridge`` command: serve, db upgrade, load."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fhir_bridge.settings import Settings, SettingsError


def _runtime():
    from fhir_bridge.services.runtime import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="fhir-bridge")
def main() -> None:
    """fhir-bridge: FHIR R4 integration service for medical-massage clinics."""


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target migration.")
def db_upgrade(revision: str) -> None:
    """Apply the schema migrations to FHIR_BRIDGE_DATABASE_URL."""
    from fhir_bridge.store.migrate import current_revision, upgrade

    rt = _runtime()
    upgrade(rt.engine, revision)
    click.echo(f"database at revision {current_revision(rt.engine)}")
    rt.dispose()


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=True, path_type=Path))
@click.option("--if-empty", is_flag=True, help="Load only when the store holds no resource yet.")
def load(folder: Path, if_empty: bool) -> None:
    """Load every Bundle (*.json) in FOLDER into the store, upserting resources by id."""
    from fhir_bridge.fhir import jsonio
    from fhir_bridge.fhir.outcome import FhirError
    from fhir_bridge.services.loading import load_bundle, store_is_empty

    rt = _runtime()
    if if_empty and not store_is_empty(rt):
        click.echo("store already holds data; nothing loaded")
        return
    files = sorted(folder.glob("*.json")) if folder.is_dir() else [folder]
    bundles = [(f, jsonio.loads(f.read_bytes())) for f in files]
    total = sum(len(b.get("entry", [])) for _, b in bundles)
    created = updated = unchanged = 0
    with click.progressbar(length=total, label="loading resources", file=sys.stderr) as bar:
        for path, bundle in bundles:
            try:
                result = load_bundle(rt, bundle, on_entry=lambda: bar.update(1))
            except FhirError as exc:
                raise click.ClickException(f"{path.name}: {exc}") from None
            created, updated, unchanged = (
                created + result.created,
                updated + result.updated,
                unchanged + result.unchanged,
            )
    click.echo(f"{len(files)} bundles: {created} created, {updated} updated, {unchanged} unchanged")
    rt.dispose()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the bridge with gunicorn."""
    base = Settings.from_env().public_base_url.rstrip("/")
    click.echo(f"fhir-bridge on http://{host}:{port}  (public base {base})")
    click.echo(f"  CapabilityStatement  {base}/fhir/metadata")
    click.echo(f"  Patients             {base}/fhir/Patient")
    click.echo(f"  health               {base}/healthz  {base}/readyz")
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "fhir_bridge.wsgi:app",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--no-control-socket",
    ]
    os.execv(sys.executable, args)
