"""The token endpoint as an independent SMART Backend Services test suite probes it: challenges
on 401, the reason phrase on the wire, scopes on unknown types, a jti spent once its signature
holds, and hostile assertions (never a 5xx)."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from fhir_bridge.services.authorization import JWT_BEARER
from fhir_bridge.services.clients import add_client
from tests.support.jwks import ClientKey
from tests.support.tokens import bearer

TOKEN_URL = "http://bridge.test/auth/token"
NO_AUTH = {"Authorization": None}


@pytest.fixture(scope="module")
def rsa_key() -> ClientKey:
    return ClientKey.rs384()


@pytest.fixture
def payer(runtime, rsa_key):
    return add_client(
        runtime,
        client_id="acme-review",
        name="Acme claims review",
        role="payer",
        organization="Organization/org-payer-acme-health",
        scopes="system/*.rs",
        jwks_text=rsa_key.jwks_text(),
    )


def form(assertion: str, scope: str = "system/Observation.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }


def token_request(client, assertion: str, scope: str = "system/Observation.rs"):
    return client.post("/auth/token", data=form(assertion, scope), headers=NO_AUTH)


def wsgi_status_line(app, **request) -> str:
    """The status line the WSGI server (gunicorn) writes: what start_response is given."""
    seen: list[str] = []
    environ = EnvironBuilder(**request).get_environ()
    body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return seen[0]


def test_a_401_from_the_token_endpoint_carries_a_challenge(client, payer, rsa_key):
    resp = token_request(client, rsa_key.assertion("nobody-here", TOKEN_URL))
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="fhir-bridge"')
    assert 'error="invalid_client"' in challenge
    assert resp.get_json()["error"] == "invalid_client"
    assert resp.headers["Cache-Control"] == "no-store"
    # a 400 needs none
    bad_scope = token_request(client, rsa_key.assertion("acme-review", TOKEN_URL), "system/*.d")
    assert bad_scope.status_code == 400
    assert "WWW-Authenticate" not in bad_scope.headers


def test_the_challenge_quotes_safely_whatever_the_reason(client, payer, rsa_key):
    """A description with quotes or non-ASCII must not break the header's syntax."""
    resp = token_request(client, rsa_key.assertion("acme-review", 'http://x/"é\\'))
    challenge = resp.headers["WWW-Authenticate"]
    description = challenge.split('error_description="', 1)[1]
    assert description.endswith('"')
    assert '"' not in description[:-1]
    assert "\\" not in description
    assert challenge.isascii()


def test_every_401_says_unauthorized_on_the_status_line(app, payer, rsa_key):
    token = wsgi_status_line(
        app,
        path="/auth/token",
        method="POST",
        data=urlencode(form(rsa_key.assertion("nobody-here", TOKEN_URL))),
        content_type="application/x-www-form-urlencoded",
    )
    assert token == "401 Unauthorized"
    assert wsgi_status_line(app, path="/fhir/Patient") == "401 Unauthorized"
    bad = {"Authorization": "Bearer not-a-token"}
    assert wsgi_status_line(app, path="/fhir/Patient", headers=bad) == "401 Unauthorized"
    # the others in RFC 9110 case too
    assert wsgi_status_line(app, path="/fhir/metadata") == "200 OK"
    assert wsgi_status_line(app, path="/nowhere") == "404 Not Found"
    big = {"data": b"x" * (6 << 20), "content_type": "application/fhir+json", "method": "POST"}
    admin = bearer(app)
    assert wsgi_status_line(app, path="/fhir", headers=admin, **big) == "413 Content Too Large"


@pytest.mark.parametrize(
    "scope",
    [
        "system/UnknownResource.read",
        "system/UnknownResource.rs",
        "system/Medication.rs",  # a FHIR R4 type the bridge does not serve
        "system/Unknownresource.*",
    ],
)
def test_a_scope_on_an_unknown_resource_type_is_not_granted(client, payer, rsa_key, scope):
    resp = token_request(client, rsa_key.assertion("acme-review", TOKEN_URL), scope)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"] == "invalid_scope"
    mixed = token_request(
        client, rsa_key.assertion("acme-review", TOKEN_URL), f"{scope} system/Patient.rs"
    )
    assert mixed.status_code == 200
    assert mixed.get_json()["scope"] == "system/Patient.rs"


def test_an_assertion_refused_after_its_signature_held_cannot_be_sent_again(client, payer, rsa_key):
    assertion = rsa_key.assertion("acme-review", TOKEN_URL, jti="spent-on-a-refusal")
    refused = token_request(client, assertion, "system/UnknownResource.read")
    assert refused.get_json()["error"] == "invalid_scope"
    again = token_request(client, assertion, "system/Observation.rs")
    assert again.status_code == 401
    assert again.get_json()["error"] == "invalid_client"
    assert "already used" in again.get_json()["error_description"]


def test_an_assertion_whose_signature_fails_does_not_spend_its_jti(client, payer, rsa_key):
    """Otherwise anyone could burn a client's jti values by sending forged assertions."""
    forged = ClientKey.rs384(kid=rsa_key.kid).assertion("acme-review", TOKEN_URL, jti="j-1")
    assert token_request(client, forged).status_code == 401
    real = rsa_key.assertion("acme-review", TOKEN_URL, jti="j-1")
    assert token_request(client, real).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"jti": "j" * 257},
        {"jti": "j" * 10_000},
        {"jti": "nul\x00jti"},
        {"exp": float("nan")},
        {"exp": float("inf")},
        {"exp": True},
        {"exp": 10**40},
    ],
    ids=["jti-257", "jti-10000", "jti-nul", "exp-nan", "exp-inf", "exp-bool", "exp-huge"],
)
def test_bad_assertion_claims_are_invalid_client_not_a_500(client, payer, rsa_key, claims):
    resp = token_request(client, rsa_key.assertion("acme-review", TOKEN_URL, claims=claims))
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "invalid_client"


def test_a_256_character_jti_is_fine(client, payer, rsa_key):
    resp = token_request(client, rsa_key.assertion("acme-review", TOKEN_URL, jti="j" * 256))
    assert resp.status_code == 200, resp.get_json()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HOSTILE_PARTS = st.sampled_from(
    [
        b'{"alg":"RS384","kid":"rsa-1","x":' + b"9" * 5000 + b"}",
        b"[" * 50_000 + b"]" * 50_000,
        b'{"alg":"RS384","kid":"rsa-1"}',
        b'{"iss":"acme-review","sub":"acme-review","exp":' + b"1" * 4400 + b"}",
        b'{"iss":"' + b"a" * 300 + b'","jti":"x"}',
        b'{"iss":"acme\\u0000review"}',
        b'{"iss":"acme-review","exp":NaN}',
        b"\xff\xfe",
    ]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=HOSTILE_PARTS, payload=HOSTILE_PARTS, scope=st.sampled_from(["", "system/*.rs"]))
def test_no_hostile_assertion_gets_a_5xx(client, payer, header, payload, scope):
    assertion = f"{b64(header)}.{b64(payload)}.{b64(b'sig')}"
    resp = token_request(client, assertion, scope)
    assert resp.status_code in (400, 401), resp.get_data(as_text=True)[:300]
    assert resp.get_json()["error"] in ("invalid_client", "invalid_request")


def test_a_client_id_longer_than_the_registry_holds_is_invalid_client(client, payer, rsa_key):
    resp = token_request(client, rsa_key.assertion("c" * 129, TOKEN_URL))
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "invalid_client"
