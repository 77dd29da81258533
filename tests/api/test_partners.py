"""The partner registry: ``fhir-bridge partners`` and /api/v1/partners, on every backend.

Secrets are never stored nor shown: a recognisable token and private key are set up and no
output (``list``, ``show``, the API, the logs) may contain them, nor where they live.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_bridge.cli import main
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.outbox import EVENT_TYPES
from fhir_bridge.store.partners import PartnerStore

TOKEN_ENV = "NORTHSIDE_TOKEN_FOR_TEST"
TOKEN = "sk-live-TOPSECRET-7f3a9c1e5b"
KEY_ENV = "ACME_SMART_KEY_FOR_TEST"
NPI = "http://hl7.org/fhir/sid/us-npi|1407071236"
PAYER_ID = "https://payers.example.org/payer-id|ACME-HEALTH"
ALL_PHYSICIAN_EVENTS = [e for e in EVENT_TYPES if e.startswith("referral.")] + [
    "session.documented",
    "report.generated",
]


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM private keys on disk: ES384 (P-384), RS384 (2048-bit RSA), junk and empty files."""
    folder = tmp_path_factory.mktemp("keys")
    files = {
        "es384": _pem(ec.generate_private_key(ec.SECP384R1())),
        "rs384": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "junk": "not a key at all\n",
        "empty": "",
        "token": TOKEN + "\n",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_text(text)
    return paths


@pytest.fixture
def env(runtime: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """CLI environment on the test database (emptied by ``runtime``), the token variable set."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.delenv(KEY_ENV, raising=False)
    return {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog attached to the ``fhir_bridge`` logger itself (it may not propagate)."""
    logger = logging.getLogger("fhir_bridge")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old)


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["partners", *args], env=env, catch_exceptions=False)


def add_physician(env: dict[str, str], key: str = "northside", *extra: str) -> Result:
    return run(
        env,
        "add",
        key,
        "--name",
        "Northside Family Medicine",
        "--kind",
        "physician",
        "--base-url",
        "https://ehr.northside.example/fhir/r4/",
        "--identifier",
        NPI,
        "--auth",
        "bearer",
        "--token-env",
        TOKEN_ENV,
        *extra,
    )


def add_payer(env: dict[str, str], key_file: Path, key: str = "acme") -> Result:
    return run(
        env,
        "add",
        key,
        "--name",
        "ACME Health",
        "--kind",
        "payer",
        "--base-url",
        "https://fhir.acme.example/r4",
        "--identifier",
        PAYER_ID,
        "--auth",
        "smart",
        "--client-id",
        "clinic-bridge",
        "--token-url",
        "https://auth.acme.example/token",
        "--key-file",
        str(key_file),
        "--alg",
        "ES384",
        "--scope",
        "system/Claim.write",
        "--scope",
        "system/Encounter.write",
    )


def _table(output: str) -> dict[str, list[str]]:
    lines = output.strip().splitlines()
    assert lines[0].split() == ["KEY", "KIND", "NAME", "BASE", "URL", "EVENTS", "AUTH", "ENABLED"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_list_json_is_one_show_view_per_line(env, keys):
    assert run(env, "list", "--json").stdout == ""
    assert add_physician(env).exit_code == 0
    assert add_payer(env, keys["es384"]).exit_code == 0
    lines = [json.loads(line) for line in run(env, "list", "--json").stdout.splitlines()]
    assert [p["key"] for p in lines] == ["acme", "northside"]
    assert lines[1] == json.loads(run(env, "show", "northside").stdout)
    assert "key_file" not in json.dumps(lines)  # no secret location, as in show


def test_add_list_show_disable_enable_round_trip(env, keys, client):
    assert run(env, "list").output.strip() == "no partners registered"

    added = add_physician(env)
    assert added.exit_code == 0, added.output
    assert "partner northside added (physician, 9 event types, auth bearer, enabled)" in (
        added.stdout
    )
    assert add_payer(env, keys["es384"]).exit_code == 0

    rows = _table(run(env, "list").stdout)
    assert list(rows) == ["acme", "northside"]
    assert rows["northside"][1] == "physician"
    assert rows["northside"][-4:] == ["https://ehr.northside.example/fhir/r4", "9", "bearer", "yes"]
    assert rows["acme"][-4:] == ["https://fhir.acme.example/r4", "1", "smart", "yes"]

    shown = json.loads(run(env, "show", "northside").stdout)
    assert shown == {
        "key": "northside",
        "name": "Northside Family Medicine",
        "kind": "physician",
        "base_url": "https://ehr.northside.example/fhir/r4",
        "events": ALL_PHYSICIAN_EVENTS,
        "identifiers": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1407071236"}],
        "auth": {"kind": "bearer"},
        "delivery": {"max_bundle_entries": None, "bundle_type": "transaction"},
        "enabled": True,
        "created_at": shown["created_at"],
        "updated_at": shown["created_at"],
    }
    payer = json.loads(run(env, "show", "acme").stdout)
    assert payer["events"] == ["session.documented"]
    assert payer["identifiers"] == [
        {"system": "https://payers.example.org/payer-id", "value": "ACME-HEALTH"}
    ]
    assert payer["auth"] == {
        "kind": "smart",
        "client_id": "clinic-bridge",
        "token_url": "https://auth.acme.example/token",
        "alg": "ES384",
        "scopes": ["system/Claim.write", "system/Encounter.write"],
    }

    # the API shows exactly what ``show`` shows
    assert client.get("/api/v1/partners/northside").get_json() == shown
    assert client.get("/api/v1/partners").get_json() == {"partners": [payer, shown]}

    assert run(env, "disable", "northside").stdout.strip() == "partner northside disabled"
    assert run(env, "disable", "northside").stdout.strip() == (
        "partner northside was already disabled"
    )
    assert _table(run(env, "list").stdout)["northside"][-1] == "no"
    assert json.loads(run(env, "show", "northside").stdout)["enabled"] is False
    assert client.get("/api/v1/partners/northside").get_json()["enabled"] is False

    assert run(env, "enable", "northside").stdout.strip() == "partner northside enabled"
    assert run(env, "enable", "northside").stdout.strip() == "partner northside was already enabled"
    assert json.loads(run(env, "show", "northside").stdout)["enabled"] is True


def test_the_delivery_shape_is_set_on_add_and_changed_by_update(env, client):
    added = add_physician(env, "northside", "--max-bundle-entries", "8", "--bundle-type", "batch")
    assert added.exit_code == 0, added.output
    shape = {"max_bundle_entries": 8, "bundle_type": "batch"}
    assert json.loads(run(env, "show", "northside").stdout)["delivery"] == shape
    assert client.get("/api/v1/partners/northside").get_json()["delivery"] == shape

    updated = run(env, "update", "northside", "--bundle-type", "transaction")
    assert updated.stdout.strip() == (
        "partner northside updated (transaction, max 8 entries per Bundle)"
    )
    updated = run(env, "update", "northside", "--max-bundle-entries", "unlimited")
    assert updated.stdout.strip() == (
        "partner northside updated (transaction, max unlimited entries per Bundle)"
    )
    assert client.get("/api/v1/partners/northside").get_json()["delivery"] == {
        "max_bundle_entries": None,
        "bundle_type": "transaction",
    }

    for args, message in [
        (("--max-bundle-entries", "0"), "--max-bundle-entries: must be a whole number"),
        (("--max-bundle-entries", "many"), "'many' is not a whole number or 'unlimited'"),
        ((), "nothing to change"),
    ]:
        refused = run(env, "update", "northside", *args)
        assert refused.exit_code == 2, refused.output
        assert message in refused.stderr
    missing = run(env, "update", "nobody", "--bundle-type", "batch")
    assert missing.exit_code == 1
    assert "no partner with key 'nobody'" in missing.stderr
    assert json.loads(run(env, "show", "northside").stdout)["delivery"]["bundle_type"] == (
        "transaction"
    )


def test_stored_auth_names_where_secrets_live_never_the_secret(env, keys, runtime):
    assert add_physician(env).exit_code == 0
    assert add_payer(env, keys["es384"]).exit_code == 0
    with read_session(runtime.sessions) as session:
        store = PartnerStore(session)
        physician, payer = store.get("northside"), store.get("acme")
    assert physician is not None
    assert payer is not None
    assert physician.auth == {"token_env": TOKEN_ENV}
    assert payer.auth["key_file"] == str(keys["es384"].resolve())
    assert TOKEN not in json.dumps(physician.auth)
    assert "PRIVATE KEY" not in json.dumps(payer.auth)
    assert physician.has_identifier("http://hl7.org/fhir/sid/us-npi", "1407071236")
    assert physician.receives("referral.accepted")
    assert not payer.receives("referral.accepted")


def test_explicit_events_and_identifiers_are_kept_once_in_order(env):
    result = add_physician(
        env,
        "northside",
        "--event",
        "referral.accepted",
        "--event",
        "session.documented",
        "--event",
        "referral.accepted",
        "--identifier",
        NPI,
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(run(env, "show", "northside").stdout)
    assert shown["events"] == ["referral.accepted", "session.documented"]
    assert len(shown["identifiers"]) == 1


def test_smart_with_rs384_key_in_an_env_var_and_a_kid(env, keys, monkeypatch, client):
    monkeypatch.setenv(KEY_ENV, keys["rs384"].read_text())
    result = run(
        env,
        "add",
        "westside",
        "--name",
        "Westside Clinic",
        "--kind",
        "physician",
        "--base-url",
        "http://127.0.0.1:9000/fhir",
        "--auth",
        "smart",
        "--client-id",
        "bridge",
        "--token-url",
        "http://localhost:9000/token",
        "--key-env",
        KEY_ENV,
        "--alg",
        "RS384",
        "--kid",
        "key-2026",
        "--identifier",
        NPI,
        "--scope",
        "system/*.write",
    )
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # loopback http is fine, the key variable is set
    auth = client.get("/api/v1/partners/westside").get_json()["auth"]
    assert auth == {
        "kind": "smart",
        "client_id": "bridge",
        "token_url": "http://localhost:9000/token",
        "alg": "RS384",
        "kid": "key-2026",
        "scopes": ["system/*.write"],
    }


def test_an_unset_secret_variable_and_plain_http_are_warnings_not_errors(env, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV)
    result = run(
        env,
        "add",
        "legacy",
        "--name",
        "Legacy EHR",
        "--kind",
        "physician",
        "--base-url",
        "http://ehr.legacy.example/fhir",
        "--auth",
        "bearer",
        "--token-env",
        TOKEN_ENV,
    )
    assert result.exit_code == 0, result.output
    assert f"warning: environment variable {TOKEN_ENV} is not set here" in result.stderr
    assert "warning: base_url uses plain http" in result.stderr
    assert "partner legacy added" in result.stdout


def test_a_partner_routing_could_never_pick_is_a_warning(env):
    physician = run(
        env,
        "add",
        "no-npi",
        "--name",
        "No NPI",
        "--kind",
        "physician",
        "--base-url",
        "https://ehr.example/fhir",
        "--identifier",
        "https://ehr.example/ids|42",
        "--auth",
        "none",
    )
    assert physician.exit_code == 0
    assert "warning: no http://hl7.org/fhir/sid/us-npi identifier" in physician.stderr
    payer = run(
        env,
        "add",
        "no-payer-id",
        "--name",
        "No payer id",
        "--kind",
        "payer",
        "--base-url",
        "https://payer.example/fhir",
        "--auth",
        "none",
    )
    assert payer.exit_code == 0
    assert "warning: no https://payers.example.org/payer-id identifier" in payer.stderr
    assert "warning" not in add_physician(env).stderr


def test_no_output_api_or_log_line_contains_a_secret(env, keys, client, logs, monkeypatch):
    pem = keys["es384"].read_text()
    monkeypatch.setenv(KEY_ENV, pem)
    outputs = [
        add_physician(env).output,
        add_payer(env, keys["es384"]).output,
        run(
            env,
            "add",
            "tokenfile",
            "--name",
            "Token File EHR",
            "--kind",
            "physician",
            "--base-url",
            "https://ehr.tokenfile.example/fhir",
            "--auth",
            "bearer",
            "--token-file",
            str(keys["token"]),
        ).output,
        run(env, "list").output,
        run(env, "show", "northside").output,
        run(env, "show", "acme").output,
        run(env, "show", "tokenfile").output,
        run(env, "disable", "northside").output,
        run(env, "enable", "northside").output,
        client.get("/api/v1/partners").get_data(as_text=True),
        client.get("/api/v1/partners/northside").get_data(as_text=True),
        client.get("/api/v1/partners/acme").get_data(as_text=True),
        client.get("/api/v1/partners/tokenfile").get_data(as_text=True),
        # a failed add that reads the secret does not echo it either
        run(
            env,
            "add",
            "badkey",
            "--name",
            "Bad",
            "--kind",
            "payer",
            "--base-url",
            "https://x.example/fhir",
            "--auth",
            "smart",
            "--client-id",
            "c",
            "--token-url",
            "https://x.example/token",
            "--key-env",
            KEY_ENV,
            "--alg",
            "RS384",  # an EC key does not suit RS384
            "--scope",
            "system/*.write",
        ).output,
    ]
    assert "partner acme added" in outputs[1]
    assert "does not suit RS384" in outputs[-1]
    assert any(r.getMessage() == "partner added" for r in logs.records)
    logged = "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in logs.records
    )  # message and every extra field
    everything = "\n".join([*outputs, logged, logs.text])
    pem_body = pem.splitlines()[1]
    for secret in (TOKEN, pem_body, "PRIVATE KEY"):
        assert secret not in everything
    # not even where the secrets live
    for location in (TOKEN_ENV, str(keys["es384"]), str(keys["token"]), "token_env", "key_file"):
        assert location not in "\n".join(outputs[3:-1])


def test_a_duplicate_key_is_a_clear_error_and_changes_nothing(env):
    assert add_physician(env).exit_code == 0
    again = run(
        env,
        "add",
        "northside",
        "--name",
        "Someone Else",
        "--kind",
        "payer",
        "--base-url",
        "https://other.example/fhir",
        "--auth",
        "none",
    )
    assert again.exit_code == 1
    assert "Traceback" not in again.output
    assert "a partner with key 'northside' already exists" in again.stderr
    shown = json.loads(run(env, "show", "northside").stdout)
    assert shown["name"] == "Northside Family Medicine"
    assert shown["kind"] == "physician"


def test_unknown_keys_are_clear_errors(env, client):
    for command in ("show", "disable", "enable"):
        result = run(env, command, "nobody")
        assert result.exit_code == 1
        assert "no partner with key 'nobody'" in result.stderr
    response = client.get("/api/v1/partners/nobody")
    assert response.status_code == 404
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "not-found"


def test_the_api_refuses_unknown_parameters(env, client):
    response = client.get("/api/v1/partners?secret=1")
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["code"] == "not-supported"


BASE = "--name N --base-url https://ehr.example/fhir"
SMART = (
    "--kind payer --auth smart --client-id c --token-url https://auth.example/token --alg ES384"
    " --scope system/*.write"
)
SMART_NO_ALG = "--kind payer --auth smart --client-id c --token-url https://auth.example/token"

#: the ``partners add`` arguments (shell words; ``{name}`` is a file of ``keys``) -> the message
INVALID = {
    "key with capitals": (f"Bad-Key {BASE} --kind payer --auth none", "KEY: 'Bad-Key'"),
    "key with a slash": (f"a/b {BASE} --kind payer --auth none", "KEY: 'a/b'"),
    "empty name": (
        "p --name ' ' --base-url https://x.example --kind payer --auth none",
        "--name: must not be empty",
    ),
    "unknown kind": (f"p {BASE} --kind pharmacy --auth none", "'pharmacy' is not one"),
    "ftp base url": (
        "p --name N --base-url ftp://x.example --kind payer --auth none",
        "--base-url: 'ftp://x.example' is not an absolute http or https URL",
    ),
    "relative base url": (
        "p --name N --base-url /fhir --kind payer --auth none",
        "--base-url: '/fhir' is not an absolute http or https URL",
    ),
    "base url with credentials": (
        "p --name N --base-url https://u:pw@x.example --kind payer --auth none",
        "--base-url: must not carry credentials",
    ),
    "base url with a query": (
        "p --name N --base-url 'https://x.example/?a=1' --kind payer --auth none",
        "--base-url: must have no query or fragment",
    ),
    "unknown event": (
        f"p {BASE} --kind payer --auth none --event patient.created",
        "--event: 'patient.created' is not one of referral.received",
    ),
    "identifier without a bar": (
        f"p {BASE} --kind payer --auth none --identifier ACME",
        "--identifier: 'ACME' is not SYSTEM|VALUE",
    ),
    "identifier without a value": (
        f"p {BASE} --kind payer --auth none --identifier 'https://x.example|'",
        "is not SYSTEM|VALUE",
    ),
    "identifier system not a URI": (
        f"p {BASE} --kind payer --auth none --identifier 'payer|ACME'",
        "--identifier: system 'payer' is not an absolute URI",
    ),
    "bad NPI check digit": (
        f"p {BASE} --kind physician --auth none"
        " --identifier 'http://hl7.org/fhir/sid/us-npi|1407071237'",
        "--identifier: '1407071237' is not a valid NPI",
    ),
    "unknown auth": (f"p {BASE} --kind payer --auth basic", "'basic' is not one"),
    "bearer without a token source": (
        f"p {BASE} --kind payer --auth bearer",
        "--token-env: give exactly one of --token-env or --token-file",
    ),
    "bearer with both sources": (
        f"p {BASE} --kind payer --auth bearer --token-env T --token-file {{token}}",
        "--token-env: give exactly one of --token-env or --token-file",
    ),
    "token env not a variable name": (
        f"p {BASE} --kind payer --auth bearer --token-env eyJ.abc.def",
        "--token-env: 'eyJ.abc.def' is not an environment variable name",
    ),
    "token file missing": (
        f"p {BASE} --kind payer --auth bearer --token-file /no/such/token",
        "--token-file: '/no/such/token' is not an existing file",
    ),
    "token file empty": (
        f"p {BASE} --kind payer --auth bearer --token-file {{empty}}",
        "is empty",
    ),
    "token option with auth none": (
        f"p {BASE} --kind payer --auth none --token-env T",
        "--token-env: does not apply to --auth none",
    ),
    "smart option with bearer": (
        f"p {BASE} --kind payer --auth bearer --token-env T --client-id c",
        "--client-id: does not apply to --auth bearer",
    ),
    "token option with smart": (
        f"p {BASE} {SMART} --key-file {{es384}} --token-env T",
        "--token-env: does not apply to --auth smart",
    ),
    "smart without client id": (
        f"p {BASE} --kind payer --auth smart --token-url https://a.example/t --alg ES384"
        " --scope s --key-file {es384}",
        "--client-id: is required with --auth smart",
    ),
    "smart without token url": (
        f"p {BASE} --kind payer --auth smart --client-id c --alg ES384 --scope s"
        " --key-file {es384}",
        "--token-url: is required with --auth smart",
    ),
    "smart without alg": (
        f"p {BASE} {SMART_NO_ALG} --scope s --key-file {{es384}}",
        "--alg: is required with --auth smart",
    ),
    "smart without scope": (
        f"p {BASE} {SMART_NO_ALG} --alg ES384 --key-file {{es384}}",
        "--scope: at least one is required with --auth smart",
    ),
    "smart scope with spaces": (
        f"p {BASE} {SMART} --scope 'a b' --key-file {{es384}}",
        "--scope: each --scope is one scope",
    ),
    "smart without key": (f"p {BASE} {SMART}", "give exactly one of --key-env or --key-file"),
    "smart with both keys": (
        f"p {BASE} {SMART} --key-env K --key-file {{es384}}",
        "give exactly one of --key-env or --key-file",
    ),
    "smart key file missing": (
        f"p {BASE} {SMART} --key-file /no/such/key.pem",
        "--key-file: '/no/such/key.pem' is not an existing file",
    ),
    "smart key file not a key": (
        f"p {BASE} {SMART} --key-file {{junk}}",
        "is not an unencrypted PEM private key",
    ),
    "smart key does not suit alg": (
        f"p {BASE} {SMART} --key-file {{rs384}}",
        "does not suit ES384",
    ),
    "smart alg HS256": (
        f"p {BASE} {SMART_NO_ALG} --alg HS256 --scope s --key-file {{es384}}",
        "--alg: 'HS256' is not supported; use one of RS384, ES384",
    ),
    "smart alg none": (
        f"p {BASE} {SMART_NO_ALG} --alg none --scope s --key-file {{es384}}",
        "--alg: 'none' is not supported",
    ),
    "smart token url plain http": (
        f"p {BASE} --kind payer --auth smart --client-id c --token-url http://auth.example/t"
        " --alg ES384 --scope s --key-file {es384}",
        "--token-url: must use https (plain http only on loopback)",
    ),
}


@pytest.mark.parametrize(("args", "message"), INVALID.values(), ids=INVALID.keys())
def test_every_invalid_add_is_a_clear_usage_error(env, keys, args, message):
    words = shlex.split(args.format(**{k: shlex.quote(str(v)) for k, v in keys.items()}))
    result = run(env, "add", *words)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert run(env, "list").output.strip() == "no partners registered"


def test_all_problems_are_reported_at_once(env):
    result = run(
        env,
        "add",
        "Bad Key",
        "--name",
        "",
        "--kind",
        "payer",
        "--base-url",
        "ftp://x",
        "--event",
        "nope",
        "--auth",
        "smart",
    )
    assert result.exit_code == 2
    for option in ("KEY:", "--name:", "--base-url:", "--event:", "--client-id:", "--scope:"):
        assert option in result.stderr
