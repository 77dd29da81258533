"""Setting the bridge up from the command line: what an operator meets first."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from fhir_bridge import cli
from fhir_bridge.cli import main


class _Exec(Exception):
    """Raised instead of replacing the process with gunicorn."""


@pytest.fixture
def execs(monkeypatch) -> list[tuple[list[str], str | None]]:
    """Captures serve's exec: gunicorn's argv and the public base URL it would see."""
    seen: list[tuple[list[str], str | None]] = []

    def fake_execv(_path: str, args: list[str]) -> None:
        seen.append((args, os.environ.get("FHIR_BRIDGE_PUBLIC_BASE_URL")))
        raise _Exec

    monkeypatch.setattr(cli.os, "execv", fake_execv)
    return seen


def _serve(*args: str, base: str | None = None):
    env = {"FHIR_BRIDGE_PUBLIC_BASE_URL": base}
    return CliRunner().invoke(main, ["serve", *args], env=env)


def test_serve_port_moves_the_public_base_url_with_it(execs):
    result = _serve("--port", "9090")
    assert isinstance(result.exception, _Exec)
    assert "public base http://127.0.0.1:9090" in result.output
    argv, base = execs[0]
    assert base == "http://127.0.0.1:9090"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:9090"
    assert argv[argv.index("--config") + 1] == "python:fhir_bridge.gunicorn_conf"


def test_serve_on_every_interface_names_the_loopback_address(execs):
    _serve("--host", "0.0.0.0", "--port", "9091")
    assert execs[0][1] == "http://127.0.0.1:9091"


def test_a_configured_public_base_url_wins_over_the_port(execs):
    result = _serve("--port", "9092", base="https://bridge.clinic.example.org")
    assert "public base https://bridge.clinic.example.org" in result.output
    assert execs[0][1] == "https://bridge.clinic.example.org"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nonsense", "is not a database URL"),
        ("mysql+nosuchdriver://x/y", "unknown database kind"),
        ("postgresql://bridge:s3cret@127.0.0.1:1/x?connect_timeout=2", "Connection refused"),
        ("sqlite:////proc/no-such-folder/bridge.db", "cannot create the SQLite file's folder"),
    ],
)
def test_a_bad_database_url_is_one_line_not_a_traceback(url, says):
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"FHIR_BRIDGE_DATABASE_URL": url})
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: ")
    assert says in line
    assert "s3cret" not in line


def test_serve_with_a_malformed_database_url_says_so_before_starting(execs):
    env = {"FHIR_BRIDGE_DATABASE_URL": "nonsense", "FHIR_BRIDGE_PUBLIC_BASE_URL": None}
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: FHIR_BRIDGE_DATABASE_URL is not a database URL (sqlite:///PATH or "
        "postgresql://USER@HOST/DB)"
    ]
    assert execs == []
