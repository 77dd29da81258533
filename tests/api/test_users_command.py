"""``fhir-bridge users``: staff accounts from the command line, passwords never echoed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fhir_bridge.cli import main


@pytest.fixture
def env(tmp_path):
    environ = {
        "FHIR_BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'users.db'}",
        "FHIR_BRIDGE_LOG_JSON": "false",
    }
    CliRunner().invoke(main, ["db", "upgrade"], env=environ, catch_exceptions=False)
    return environ


def run(env, *args, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)


def test_add_list_disable_and_reset(env):
    added = run(
        env, "users", "add", "alice", "--name", "Alice Moreau", "--role", "front-desk",
        "--password-stdin", stdin="a long enough password\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "a long enough password" not in added.output
    listed = [json.loads(line) for line in run(env, "users", "list").output.splitlines()]
    assert listed[0]["username"] == "alice"
    assert listed[0]["role"] == "front-desk"
    assert "hash" not in json.dumps(listed)
    again = run(
        env, "users", "add", "alice", "--name", "A", "--role", "therapist", "--password-stdin",
        stdin="another long password\n",
    )  # fmt: skip
    assert again.exit_code == 1
    assert "already exists" in again.output
    absent = run(
        env, "users", "add", "alice", "--name", "A", "--role", "therapist", "--password-stdin",
        "--if-absent", stdin="another long password\n",
    )  # fmt: skip
    assert absent.exit_code == 0
    assert "left as it is" in absent.output
    assert run(env, "users", "disable", "alice").exit_code == 0
    assert json.loads(run(env, "users", "list").output)["enabled"] is False
    reset = run(
        env, "users", "reset-password", "alice", "--password-stdin", stdin="fresh pw 123456\n"
    )
    assert reset.exit_code == 0
    assert run(env, "users", "disable", "nobody").exit_code == 1


def test_bad_role_short_password_and_bad_username_are_refused(env):
    bad_role = run(env, "users", "add", "bob", "--name", "Bob", "--role", "admin",
                   "--password-stdin", stdin="a long enough password\n")  # fmt: skip
    assert bad_role.exit_code == 2
    short = run(env, "users", "add", "bob", "--name", "Bob", "--role", "therapist",
                "--password-stdin", stdin="short\n")  # fmt: skip
    assert short.exit_code == 2
    assert "12 characters" in short.output
    bad_name = run(env, "users", "add", "Bob Smith", "--name", "Bob", "--role", "therapist",
                   "--password-stdin", stdin="a long enough password\n")  # fmt: skip
    assert bad_name.exit_code == 2
    assert run(env, "users", "list").output == ""
