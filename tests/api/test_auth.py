"""SMART Backend Services at the bridge: discovery, token endpoint, every endpoint guarded."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import jwt
import pytest
from click.testing import CliRunner

from fhir_bridge.api.security import OPEN_ENDPOINTS
from fhir_bridge.app import create_app
from fhir_bridge.cli import main
from fhir_bridge.security.tokens import issue_access_token
from fhir_bridge.services.authorization import JWT_BEARER, utcnow
from fhir_bridge.services.clients import add_client
from tests.support.jwks import ClientKey
from tests.support.tokens import bearer

TOKEN_URL = "http://bridge.test/auth/token"
NO_AUTH = {"Authorization": None}


@pytest.fixture(scope="module")
def rsa_key() -> ClientKey:
    return ClientKey.rs384()


@pytest.fixture(scope="module")
def ec_key() -> ClientKey:
    return ClientKey.es384()


@pytest.fixture
def payer(runtime, rsa_key):
    return add_client(
        runtime,
        client_id="acme-review",
        name="Acme claims review",
        role="payer",
        organization="Organization/org-payer-acme-health",
        jwks_text=rsa_key.jwks_text(),
    )


def token_request(client, assertion: str, scope: str = "system/Observation.rs", **extra):
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **extra,
    }
    return client.post("/auth/token", data=form, headers=NO_AUTH)


def test_smart_configuration_is_open_at_root_and_fhir_base(client):
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        resp = client.get(path, headers=NO_AUTH)
        assert resp.status_code == 200
        body = resp.get_json()
        assert body["token_endpoint"] == TOKEN_URL
        assert "client_credentials" in body["grant_types_supported"]
        assert body["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert set(body["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
        assert {"client-confidential-asymmetric", "permission-v2"} <= set(body["capabilities"])
    metadata = client.get("/fhir/metadata", headers=NO_AUTH).get_json()
    (oauth,) = metadata["rest"][0]["security"]["extension"]
    assert oauth["extension"] == [{"url": "token", "valueUri": TOKEN_URL}]


def test_rs384_assertion_gets_a_short_token_that_reads_observations(client, payer, rsa_key):
    resp = token_request(client, rsa_key.assertion("acme-review", TOKEN_URL))
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Observation.rs"
    assert resp.headers["Cache-Control"] == "no-store"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/fhir/Observation", headers=headers).status_code == 200
    # the scope names Observation only
    denied = client.get("/fhir/Procedure", headers=headers)
    assert denied.status_code == 403
    assert denied.get_json()["issue"][0]["code"] == "forbidden"
    assert denied.get_json()["issue"][0]["expression"]


def test_es384_and_v1_scopes(client, runtime, ec_key):
    add_client(
        runtime,
        client_id="north-ehr",
        name="Northside EHR",
        role="ehr",
        organization="Organization/org-northside-family-medicine",
        jwks_text=ec_key.jwks_text(),
    )
    resp = token_request(client, ec_key.assertion("north-ehr", TOKEN_URL), "system/Patient.read")
    assert resp.status_code == 200, resp.get_json()
    headers = {"Authorization": f"Bearer {resp.get_json()['access_token']}"}
    assert client.get("/fhir/Patient", headers=headers).status_code == 200


def test_requested_scopes_beyond_the_registration_are_not_granted(client, payer, rsa_key):
    resp = token_request(
        client, rsa_key.assertion("acme-review", TOKEN_URL), "system/Observation.rs system/*.d"
    )
    assert resp.status_code == 200
    assert resp.get_json()["scope"] == "system/Observation.rs"
    only_bad = token_request(client, rsa_key.assertion("acme-review", TOKEN_URL), "system/*.cud")
    assert only_bad.status_code == 400
    assert only_bad.get_json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    "case",
    [
        "unknown client",
        "wrong aud",
        "exp beyond 5 minutes",
        "expired",
        "sub differs",
        "other key",
        "no kid",
        "hs256",
        "alg none",
        "not a jwt",
    ],
)
def test_bad_assertions_are_invalid_client(client, payer, rsa_key, case):
    other = ClientKey.rs384(kid=rsa_key.kid)
    assertion = {
        "unknown client": lambda: rsa_key.assertion("nobody-here", TOKEN_URL),
        "wrong aud": lambda: rsa_key.assertion("acme-review", "http://elsewhere/token"),
        "exp beyond 5 minutes": lambda: rsa_key.assertion("acme-review", TOKEN_URL, lifetime=600),
        "expired": lambda: rsa_key.assertion("acme-review", TOKEN_URL, lifetime=-10),
        "sub differs": lambda: rsa_key.assertion(
            "acme-review", TOKEN_URL, claims={"sub": "someone-else"}
        ),
        "other key": lambda: other.assertion("acme-review", TOKEN_URL),
        "no kid": lambda: jwt.encode(
            {
                "iss": "acme-review",
                "sub": "acme-review",
                "aud": TOKEN_URL,
                "jti": "x",
                "exp": int(time.time()) + 60,
            },
            rsa_key.private,
            algorithm="RS384",
        ),
        "hs256": lambda: jwt.encode(
            {
                "iss": "acme-review",
                "sub": "acme-review",
                "aud": TOKEN_URL,
                "jti": "x",
                "exp": int(time.time()) + 60,
            },
            "shared-secret-guess-0123456789abcdef",
            algorithm="HS256",
            headers={"kid": rsa_key.kid},
        ),
        "alg none": lambda: _unsigned(
            {"alg": "none", "kid": rsa_key.kid},
            {
                "iss": "acme-review",
                "sub": "acme-review",
                "aud": TOKEN_URL,
                "jti": "x",
                "exp": int(time.time()) + 60,
            },
        ),
        "not a jwt": lambda: "not.a.jwt",
    }[case]()
    resp = token_request(client, assertion)
    assert resp.status_code == 401, resp.get_json()
    assert resp.get_json()["error"] == "invalid_client"
    assert "access_token" not in resp.get_json()


def test_a_replayed_assertion_is_refused(client, payer, rsa_key):
    assertion = rsa_key.assertion("acme-review", TOKEN_URL, jti="once-only")
    assert token_request(client, assertion).status_code == 200
    again = token_request(client, assertion)
    assert again.status_code == 401
    assert "already used" in again.get_json()["error_description"]


def test_a_disabled_client_gets_no_token(client, payer, rsa_key, database_url):
    env = {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}
    result = CliRunner().invoke(main, ["clients", "disable", "acme-review"], env=env)
    assert result.exit_code == 0, result.output
    resp = token_request(client, rsa_key.assertion("acme-review", TOKEN_URL))
    assert resp.status_code == 401


def test_grant_type_and_assertion_type_are_checked(client, payer, rsa_key):
    bad_grant = token_request(
        client, rsa_key.assertion("acme-review", TOKEN_URL), grant_type="password"
    )
    assert bad_grant.status_code == 400
    assert bad_grant.get_json()["error"] == "unsupported_grant_type"
    bad_type = token_request(
        client, rsa_key.assertion("acme-review", TOKEN_URL), client_assertion_type="basic"
    )
    assert bad_type.get_json()["error"] == "invalid_request"


def _unsigned(header: dict, claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part(header)}.{part(claims)}."


def _access_token(app, **overrides) -> str:
    from fhir_bridge.api.security import signing_secret

    with app.app_context():
        secret = signing_secret()
    settings = app.extensions["fhir_bridge"].settings
    args = {
        "issuer": settings.public_base_url,
        "audience": settings.fhir_base_url,
        "client_id": "test-admin",
        "role": "admin",
        "organization": None,
        "scope": "system/*.cruds",
        "now": utcnow(),
        **overrides,
    }
    secret = args.pop("secret", secret)
    return issue_access_token(secret, **args).access_token


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "basic scheme",
        "malformed",
        "expired",
        "wrongly signed",
        "alg none",
        "other audience",
    ],
)
def test_bad_access_tokens_are_401_with_www_authenticate(app, client, case):
    headers = {
        "missing": NO_AUTH,
        "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "malformed": {"Authorization": "Bearer abc.def"},
        "expired": {
            "Authorization": "Bearer " + _access_token(app, now=utcnow() - timedelta(minutes=6))
        },
        "wrongly signed": {"Authorization": "Bearer " + _access_token(app, secret="x" * 64)},
        "alg none": {
            "Authorization": "Bearer "
            + _unsigned(
                {"alg": "none", "typ": "JWT"},
                {
                    "sub": "x",
                    "role": "admin",
                    "scope": "system/*.cruds",
                    "jti": "j",
                    "iat": int(time.time()),
                    "exp": int(time.time()) + 60,
                    "iss": "http://bridge.test",
                    "aud": "http://bridge.test/fhir",
                },
            )
        },
        "other audience": {
            "Authorization": "Bearer " + _access_token(app, audience="http://other/fhir")
        },
    }[case]
    resp = client.get("/fhir/Patient", headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.mimetype == "application/fhir+json"
    issue = resp.get_json()["issue"][0]
    assert issue["code"] == "login"
    assert issue["expression"] == ["http.Authorization"]


def _example_path(rule) -> str:
    values = {
        "resource_type": "Patient",
        "resource_id": "pat-x",
        "vid": "1",
        "session_id": "s-1",
        "referral_id": "r-1",
        "action": "accept",
        "key": "k",
        "delivery_id": "1",
    }
    path = rule.rule
    for arg in rule.arguments:
        path = path.replace(f"<{arg}>", values.get(arg, "x"))
        for conv in ("any(ServiceRequest, Task):", "path:"):
            path = path.replace(f"<{conv}{arg}>", values.get(arg, "ServiceRequest"))
    return path


def test_every_endpoint_but_the_open_ones_needs_a_token(app, client):
    open_rules, guarded = [], []
    for rule in app.url_map.iter_rules():
        (open_rules if rule.endpoint in OPEN_ENDPOINTS else guarded).append(rule)
    assert {r.endpoint for r in open_rules} == set(OPEN_ENDPOINTS)
    assert len(guarded) > 20
    for rule in guarded:
        if rule.endpoint.startswith("console."):
            continue  # the console's own login guards it (tests/api/test_console_security.py)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(_example_path(rule), method=method, headers=NO_AUTH)
            assert resp.status_code == 401, (method, rule.rule, resp.status_code)


def test_open_endpoints_answer_without_a_token(client):
    for path in ("/healthz", "/readyz", "/fhir/metadata", "/.well-known/smart-configuration"):
        assert client.get(path, headers=NO_AUTH).status_code == 200, path


def test_clinic_api_is_for_clinic_and_admin_roles_only(app, client):
    payer_headers = bearer(app, role="payer", organization="Organization/org-payer-acme-health")
    resp = client.get("/api/v1/sessions", headers=payer_headers)
    assert resp.status_code == 403
    assert client.get("/api/v1/sessions", headers=bearer(app, role="clinic")).status_code == 200


def test_audit_events_are_for_admins_only(app, client):
    clinic = bearer(app, role="clinic")
    assert client.get("/fhir/AuditEvent", headers=clinic).status_code == 403
    assert client.get("/fhir/AuditEvent").status_code == 200  # the admin test client


def test_rate_limit_answers_429_with_retry_after(runtime):
    from dataclasses import replace

    app = create_app(replace(runtime.settings, rate_limit_per_minute=3), runtime=runtime)
    client = app.test_client()
    headers = bearer(app, client_id="busy-payer")
    statuses = [client.get("/fhir/Patient", headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    last = client.get("/fhir/Patient", headers=headers)
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    assert last.get_json()["issue"][0]["code"] == "throttled"
    # another client has its own allowance
    assert client.get("/fhir/Patient", headers=bearer(app, client_id="calm")).status_code == 200


def test_development_mode_lets_requests_without_a_token_in(runtime):
    from dataclasses import replace

    app = create_app(replace(runtime.settings, dev_open_access=True), runtime=runtime)
    assert app.test_client().get("/fhir/Patient", headers=NO_AUTH).status_code == 200


def test_clients_cli_add_list_never_prints_key_material(database_url, runtime, rsa_key, tmp_path):
    env = {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(rsa_key.jwks_text())
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "clients",
            "add",
            "bluestone",
            "--name",
            "Bluestone",
            "--role",
            "payer",
            "--organization",
            "Organization/org-payer-bluestone-mutual",
            "--jwks-file",
            str(jwks),
        ],
        env=env,
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["clients", "list"], env=env)
    row = json.loads(listed.output.splitlines()[0])
    assert row["client_id"] == "bluestone"
    assert row["role"] == "payer"
    assert row["keys"] == {"kids": [rsa_key.kid]}
    modulus = rsa_key.jwks()["keys"][0]["n"]
    assert modulus not in added.output + listed.output
    no_org = runner.invoke(
        main,
        ["clients", "add", "payer-two", "--name", "P", "--role", "payer", "--jwks-file", str(jwks)],
        env=env,
    )
    assert no_org.exit_code != 0
    assert "--organization" in no_org.output
    private = tmp_path / "private.json"
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.private))
    private.write_text(json.dumps({"keys": [{**jwk, "kid": "k"}]}))
    refused = runner.invoke(
        main,
        [
            "clients",
            "add",
            "admin-three",
            "--name",
            "P",
            "--role",
            "admin",
            "--jwks-file",
            str(private),
        ],
        env=env,
    )
    assert refused.exit_code != 0
    assert "private key" in refused.output


@pytest.fixture
def jwks_server(rsa_key):
    """A real HTTP server publishing the client's JWKS, as a client's own site would."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = rsa_key.jwks_text().encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if self.path == "/jwks.json" else b"{}")

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_keys_published_at_a_jwks_url_are_fetched_and_jku_must_match(
    client, runtime, rsa_key, jwks_server
):
    add_client(
        runtime,
        client_id="remote-keys",
        name="Keys at a URL",
        role="payer",
        organization="Organization/org-payer-acme-health",
        jwks_url=f"{jwks_server}/jwks.json",
    )
    ok = token_request(client, rsa_key.assertion("remote-keys", TOKEN_URL))
    assert ok.status_code == 200, ok.get_json()
    named = token_request(
        client,
        rsa_key.assertion("remote-keys", TOKEN_URL, headers={"jku": f"{jwks_server}/jwks.json"}),
    )
    assert named.status_code == 200
    elsewhere = token_request(
        client,
        rsa_key.assertion("remote-keys", TOKEN_URL, headers={"jku": "https://evil.example/jwks"}),
    )
    assert elsewhere.status_code == 401
    assert "jku" in elsewhere.get_json()["error_description"]


def test_an_unreachable_jwks_url_is_invalid_client_not_a_500(client, runtime, rsa_key):
    add_client(
        runtime,
        client_id="gone-keys",
        name="Keys gone",
        role="payer",
        organization="Organization/org-payer-acme-health",
        jwks_url="http://127.0.0.1:9/jwks.json",
    )
    resp = token_request(client, rsa_key.assertion("gone-keys", TOKEN_URL))
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "invalid_client"


def test_a_cached_token_still_expires(app, client, monkeypatch):
    from fhir_bridge.services import authorization
    from fhir_bridge.services.authorization import VerifiedTokens

    token = _access_token(app, now=utcnow() - timedelta(seconds=290))  # 10 s left
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/fhir/Patient", headers=headers).status_code == 200
    cache: VerifiedTokens = app.extensions["fhir_bridge_verified_tokens"]
    later = utcnow() + timedelta(seconds=30)
    assert cache.get(token, utcnow()) is not None
    assert cache.get(token, later) is None  # expired: dropped, not served from the cache
    monkeypatch.setattr(authorization, "utcnow", lambda: later)
    assert client.get("/fhir/Patient", headers=headers).status_code == 401
