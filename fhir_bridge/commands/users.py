"""``fhir-bridge users``: staff accounts of the clinic console (add, list, disable, reset-password).

Roles: ``front-desk`` and ``therapist`` (the clinic's day-to-day pages) and ``clinic-admin``
(also partners, API clients, delivery payloads and the audit log). Passwords are asked for
on the terminal (or read from ``--password-stdin``), never taken as an argument that would
land in the shell history.
"""

from __future__ import annotations

import json
import sys

import click

from fhir_bridge.settings import Settings, SettingsError

ROLES = ("front-desk", "therapist", "clinic-admin")


def _runtime():
    from fhir_bridge.services.runtime import build_runtime

    try:
        return build_runtime(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group("users")
def users() -> None:
    """Staff accounts of the clinic console."""


@users.command("add")
@click.argument("username")
@click.option("--name", required=True, help="The person's name as the console shows it.")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--if-absent", is_flag=True, help="Do nothing (exit 0) when the user exists.")
def add(username: str, name: str, role: str, password_stdin: bool, if_absent: bool) -> None:
    """Register a staff user."""
    from fhir_bridge.services import staff_users

    rt = _runtime()
    try:
        if if_absent and staff_users.get_user(rt, username) is not None:
            click.echo(f"{username} exists; left as it is")
            return
        row = staff_users.add_user(
            rt, username=username, display_name=name, role=role, password=_password(password_stdin)
        )
    except staff_users.UserSpecError as exc:
        raise click.UsageError(str(exc)) from None
    except staff_users.StaffUserExists:
        raise click.ClickException(f"user {username} already exists") from None
    finally:
        rt.dispose()
    click.echo(json.dumps(row.public()))


@users.command("list")
def list_() -> None:
    """Every staff user as JSON lines (never a password hash)."""
    from fhir_bridge.services import staff_users

    rt = _runtime()
    try:
        for row in staff_users.list_users(rt):
            click.echo(json.dumps(row.public()))
    finally:
        rt.dispose()


def _set_enabled(username: str, enabled: bool) -> None:
    from fhir_bridge.services import staff_users

    rt = _runtime()
    try:
        if not staff_users.set_enabled(rt, username, enabled):
            raise click.ClickException(f"no user {username}")
    finally:
        rt.dispose()
    click.echo(f"{username} {'enabled' if enabled else 'disabled'}")


@users.command("disable")
@click.argument("username")
def disable(username: str) -> None:
    """Refuse the user's logins and end their open sessions."""
    _set_enabled(username, False)


@users.command("enable")
@click.argument("username")
def enable(username: str) -> None:
    """Let a disabled user log in again."""
    _set_enabled(username, True)


@users.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def reset_password(username: str, password_stdin: bool) -> None:
    """Set a new password; unlocks the account and ends its open sessions."""
    from fhir_bridge.services import staff_users

    rt = _runtime()
    try:
        if not staff_users.reset_password(rt, username, _password(password_stdin)):
            raise click.ClickException(f"no user {username}")
    except staff_users.UserSpecError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        rt.dispose()
    click.echo(f"password of {username} reset; its sessions have ended")
