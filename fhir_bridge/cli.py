"""The ``fhir-bridge`` command: serve, db upgrade, load, import, worker, poll, partners ..."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

import click

from fhir_bridge.commands.clients import clients
from fhir_bridge.commands.deliveries import deliveries, worker
from fhir_bridge.commands.demo import demo_data
from fhir_bridge.commands.export import export
from fhir_bridge.commands.keys import keys
from fhir_bridge.commands.partners import partners
from fhir_bridge.commands.poll import poll
from fhir_bridge.commands.users import users
from fhir_bridge.settings import Settings, SettingsError


def _runtime():
    from fhir_bridge.services.runtime import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


class _Commands(click.Group):
    """The command group; a database that cannot be used stops a command with one line."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            message = database_problem(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def database_problem(exc: BaseException) -> str | None:
    """One line saying what is wrong with FHIR_BRIDGE_DATABASE_URL, or None when ``exc`` is
    not about the database. Never the URL's password, never SQL or its parameters."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    name = "FHIR_BRIDGE_DATABASE_URL"
    if isinstance(exc, NoSuchModuleError):
        return f"{name}: unknown database kind ({exc}); use sqlite:/// or postgresql://"
    if isinstance(exc, ArgumentError):
        return f"{name} is not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB)"
    if isinstance(exc, OperationalError):
        reason = str(exc.orig or exc).strip().splitlines()[0]
        return f"cannot use the database of {name}: {reason}"
    url = os.environ.get(name, "")
    # making the SQLite file's folder failed
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) in url:
        return f"{name}: cannot create the SQLite file's folder {exc.filename} ({exc.strerror})"
    return None


@click.group(cls=_Commands)
@click.version_option(package_name="fhir-bridge")
def main() -> None:
    """fhir-bridge: FHIR R4 integration service for medical-massage clinics."""


main.add_command(worker)
main.add_command(deliveries)
main.add_command(partners)
main.add_command(clients)
main.add_command(poll)
main.add_command(users)
main.add_command(demo_data)
main.add_command(keys)
main.add_command(export)


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


@db.command("reindex")
@click.argument("resource_types", nargs=-1)
def db_reindex(resource_types: tuple[str, ...]) -> None:
    """Rebuild the search index of RESOURCE_TYPES (default: every searchable type), e.g. after
    an upgrade adds a search parameter (Patient gender)."""
    from fhir_bridge.fhir.search_params import SEARCHABLE_TYPES
    from fhir_bridge.store.reindex import count_versions, reindex

    unknown = sorted(set(resource_types) - set(SEARCHABLE_TYPES))
    if unknown:
        raise click.BadParameter(f"not searchable: {', '.join(unknown)}", param_hint="TYPES")
    types = resource_types or SEARCHABLE_TYPES
    rt = _runtime()
    with click.progressbar(length=count_versions(rt.sessions, types), label="reindexing") as bar:
        done = reindex(rt.sessions, types, progress=bar.update)
    click.echo(f"{done} versions reindexed ({', '.join(types)})")
    rt.dispose()


@main.group()
def mappings() -> None:
    """Code mapping tables (mappings/)."""


@mappings.command("check")
@click.argument(
    "folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
def mappings_check(folder: Path | None) -> None:
    """Validate the mapping tables (FOLDER, else FHIR_BRIDGE_MAPPINGS_DIR or the shipped ones)."""
    from fhir_bridge.mapping.tables import MappingError, load_tables

    if folder is None:
        configured = Settings.from_env().mappings_dir
        folder = Path(configured) if configured else None
    try:
        tables = load_tables(folder)
    except MappingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"mappings ok: {len(tables.techniques)} techniques, {len(tables.body_sites)} body sites, "
        f"{len(tables.lateralities)} lateralities, {len(tables.measures)} measures, "
        f"{len(tables.referral_services)} referral services, "
        f"{sum(m.value is not None for m in tables.mcids.values())} published MCIDs"
    )


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


@dataclass
class _ImportTally:
    """What an import did so far."""

    lines: int = 0
    blank: int = 0
    created: int = 0
    replaced: int = 0
    rejected: list[tuple[int, list[dict[str, str]]]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.created + self.replaced


_MAPPING_BUG = {
    "path": "$",
    "message": "the mapping failed on this record (a bug in the bridge): see the rejected file",
}


def _backlog_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line without its end-of-line, bytes read); splits on LF only.

    Never on the other characters ``str.splitlines`` treats as line breaks: a JSON string may
    hold a raw U+2028, and a record must not be cut there.
    """
    for number, raw in enumerate(stream, start=1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        yield number, line[:-1] if line.endswith(b"\r") else line, len(raw)


def _problems(exc: Exception) -> list[dict[str, str]]:
    """The errors of a rejected line as {path, message}; ``$`` is the line as a whole."""
    from fhir_bridge.fhir.outcome import FhirError
    from fhir_bridge.records.errors import RecordInvalid

    if isinstance(exc, RecordInvalid):
        return [{"path": p.path, "message": p.diagnostics()} for p in exc.problems]
    if isinstance(exc, FhirError):
        return [
            {"path": i.expression[0] if i.expression else "$", "message": i.diagnostics}
            for i in exc.issues
        ]
    return [{"path": "$", "message": str(exc)}]


def _reject(out: TextIO, number: int, line: bytes, errors: list[dict[str, str]]) -> None:
    """One line of the rejected file: the line number, its errors and the line as it was.

    Bytes that are not UTF-8 are kept as escaped lone surrogates (surrogateescape), so the
    original line can always be restored: nothing is lost.
    """
    text = line.decode("utf-8", errors="surrogateescape")
    ascii_only = any("\udc80" <= ch <= "\udcff" for ch in text)
    entry = {"line": number, "errors": errors, "record": text}
    out.write(json.dumps(entry, ensure_ascii=ascii_only) + "\n")
    out.flush()


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rejected",
    "rejected_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Where rejected lines go (JSON lines); default FILE.rejected.jsonl.",
)
def import_backlog(file: Path, rejected_path: Path | None) -> None:
    """Submit a JSON-lines backlog of session records (one record per line).

    Each line goes through the same path as POST /api/v1/sessions: a new session_id is
    created, a known one replaced. Blank lines are skipped. Rejected lines (bad JSON, invalid
    records, refused submissions) are written, as they were, to the rejected file with their
    errors. Exit code 0 when every line was accepted, 1 when some were rejected. The terminal
    shows line numbers, error paths and messages only, never the records (PHI).
    """
    from fhir_bridge.app import load_configured_tables
    from fhir_bridge.fhir.outcome import FhirError
    from fhir_bridge.mapping.tables import MappingError
    from fhir_bridge.records.errors import RecordInvalid
    from fhir_bridge.records.vocabulary import Vocabulary
    from fhir_bridge.services.sessions import MappingBug, submit_session

    rejected_path = rejected_path or file.with_suffix(".rejected.jsonl")
    if rejected_path.resolve() == file.resolve():
        raise click.UsageError("--rejected must not be the backlog file itself")
    rt = _runtime()
    try:
        tables = load_configured_tables(rt.settings)
    except MappingError as exc:
        rt.dispose()
        raise click.ClickException(f"mapping tables: {exc}") from None
    vocabulary = Vocabulary.from_tables(tables)
    run = uuid.uuid4().hex[:12]
    tally = _ImportTally()
    try:
        with (
            file.open("rb") as backlog,
            rejected_path.open("w", encoding="utf-8", errors="surrogateescape") as out,
            click.progressbar(
                length=file.stat().st_size, label="importing sessions", file=sys.stderr
            ) as bar,
        ):
            for number, line, size in _backlog_lines(backlog):
                bar.update(size)
                if not line.strip():
                    tally.blank += 1
                    continue
                tally.lines += 1
                try:
                    outcome = submit_session(
                        rt,
                        tables,
                        vocabulary,
                        body=line,
                        request_id=f"import-{run}-{number}",
                        content_type="application/json",
                    )
                except (RecordInvalid, FhirError, MappingBug) as exc:
                    errors = _problems(exc)
                    _reject(out, number, line, errors)
                    # a MappingBug's text comes from validating mapped resources and may quote
                    # record values: it goes to the rejected file only
                    shown = [_MAPPING_BUG] if isinstance(exc, MappingBug) else errors
                    tally.rejected.append((number, shown))
                    continue
                except Exception as exc:
                    # the message may quote the record (database errors do): name the type only
                    raise click.ClickException(
                        f"line {number}: {type(exc).__name__}; import stopped there. Lines before "
                        f"it are stored (rerunning the file is safe: a replay replaces)."
                    ) from exc
                if outcome.created:
                    tally.created += 1
                else:
                    tally.replaced += 1
    finally:
        rt.dispose()
    _report(tally, rejected_path)


def _report(tally: _ImportTally, rejected_path: Path) -> None:
    for number, errors in tally.rejected:
        for e in errors:
            click.echo(f"line {number}: {e['path']}: {_one_line(e['message'])}", err=True)
    if tally.blank:
        click.echo(f"{tally.blank} blank line(s) skipped", err=True)
    click.echo(
        f"{tally.lines} lines: {tally.accepted} accepted ({tally.created} created, "
        f"{tally.replaced} replaced), {len(tally.rejected)} rejected"
    )
    if tally.rejected:
        click.echo(f"rejected lines written to {rejected_path}", err=True)
        sys.exit(1)


def _one_line(message: str) -> str:
    """A message on one terminal line (Problem messages are PHI-free by design)."""
    return " ".join(message.split())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="Worker processes.")
@click.option("--threads", default=4, show_default=True, type=int, help="Threads per process.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the bridge with gunicorn (settings: fhir_bridge/gunicorn_conf.py).

    The public base URL (token audience, links) follows --host/--port unless
    FHIR_BRIDGE_PUBLIC_BASE_URL is set.
    """
    if not os.environ.get("FHIR_BRIDGE_PUBLIC_BASE_URL"):
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        os.environ["FHIR_BRIDGE_PUBLIC_BASE_URL"] = f"http://{shown}:{port}"
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    from fhir_bridge.store.db import make_engine

    # a malformed or unknown database URL is one line here, not a traceback per gunicorn
    # worker; an unreachable database is not checked (the bridge starts and /readyz says 503)
    make_engine(settings.database_url).dispose()
    base = settings.public_base_url.rstrip("/")
    click.echo(f"fhir-bridge on http://{host}:{port}  (public base {base})")
    click.echo(f"  CapabilityStatement  {base}/fhir/metadata")
    click.echo(f"  Patients             {base}/fhir/Patient")
    click.echo(f"  health               {base}/healthz  {base}/readyz")
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "fhir_bridge.wsgi:app",
        "--config",
        "python:fhir_bridge.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]
    os.execv(sys.executable, args)
