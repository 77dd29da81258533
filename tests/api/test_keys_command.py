"""``fhir-bridge keys generate`` makes what the README's registration examples need: a client
registered with the JWKS gets a token by signing with the PEM, and a partner takes the PEM."""

from __future__ import annotations

import json
import stat
import time
import uuid
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from fhir_bridge.cli import main

TOKEN_URL = "http://bridge.test/auth/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _cli(database_url: str, *args: str):
    env = {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}
    return CliRunner().invoke(main, list(args), env=env)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_generated_pair_registers_a_client_that_gets_a_token(
    alg, client, database_url, tmp_path: Path
):
    made = _cli(database_url, "keys", "generate", "acme", "--alg", alg, "--out-dir", str(tmp_path))
    assert made.exit_code == 0, made.output
    pem, jwks_file = tmp_path / "acme.pem", tmp_path / "acme.jwks.json"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    [key] = json.loads(jwks_file.read_text())["keys"]
    assert (key["alg"], key["use"]) == (alg, "sig")
    assert "d" not in key  # public only
    assert f"kid {key['kid']}" in made.output

    # as the README registers a payer's review system
    added = _cli(
        database_url,
        *("clients", "add", "acme-review", "--name", "Acme Health claims review"),
        *("--role", "payer", "--organization", "Organization/org-payer-acme-health"),
        *("--jwks-file", str(jwks_file)),
    )
    assert added.exit_code == 0, added.output
    now = int(time.time())
    claims = {"iss": "acme-review", "sub": "acme-review", "aud": TOKEN_URL}
    assertion = jwt.encode(
        {**claims, "exp": now + 240, "jti": uuid.uuid4().hex},
        pem.read_bytes(),
        algorithm=alg,
        headers={"kid": key["kid"]},
    )
    resp = client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
            "scope": "system/Observation.rs",
        },
        headers={"Authorization": None},
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["access_token"]

    # and as the README registers a partner the bridge logs in at with it
    partner = _cli(
        database_url,
        *("partners", "add", "northside", "--name", "Northside Family Medicine"),
        *("--kind", "physician", "--base-url", "https://ehr.northside.example.org/fhir"),
        *("--identifier", "http://hl7.org/fhir/sid/us-npi|1407071236"),
        *("--auth", "smart", "--client-id", "fhir-bridge"),
        *("--token-url", "https://ehr.northside.example.org/oauth/token"),
        *("--key-file", str(pem), "--alg", alg, "--kid", key["kid"]),
        *("--scope", "system/Task.write"),
    )
    assert partner.exit_code == 0, partner.output


def test_generate_never_overwrites_without_force(database_url, tmp_path: Path):
    args = ("keys", "generate", "k", "--out-dir", str(tmp_path))
    assert _cli(database_url, *args).exit_code == 0
    first = (tmp_path / "k.pem").read_bytes()
    again = _cli(database_url, *args)
    assert again.exit_code == 1
    assert "--force" in again.output
    assert (tmp_path / "k.pem").read_bytes() == first
    assert _cli(database_url, *args, "--force").exit_code == 0
    assert (tmp_path / "k.pem").read_bytes() != first
