"""Outbound partner auth: SMART Backend Services client, static bearer, secrets."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_bridge.exchange.auth import (
    AuthConfigError,
    BearerAuth,
    NoAuth,
    SecretUnavailable,
    SmartBackendClient,
    TokenError,
    partner_auth,
)

TOKEN_URL = "https://auth.northside.example/oauth2/token"
CLIENT_ID = "fhir-bridge-northside"
SCOPES = ["system/Observation.cu", "system/Procedure.cu"]
KEY_ENV = "FHIR_BRIDGE_TEST_SMART_KEY"
TOKEN_ENV = "FHIR_BRIDGE_TEST_BEARER"
START = float(int(time.time()))


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(params=["RS384", "ES384"])
def keypair(
    request: pytest.FixtureRequest, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> tuple[str, Any]:
    """(alg, private key) for each algorithm SMART requires clients to support."""
    return request.param, rsa_key if request.param == "RS384" else ec_key


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _settings(alg: str, **extra: Any) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "token_url": TOKEN_URL,
        "key_env": KEY_ENV,
        "alg": alg,
        "scopes": SCOPES,
        **extra,
    }


def _client(
    monkeypatch: pytest.MonkeyPatch, key: Any, alg: str, clock: FakeClock, **extra: Any
) -> SmartBackendClient:
    monkeypatch.setenv(KEY_ENV, _pem(key))
    auth = partner_auth("smart", _settings(alg, **extra), clock=clock)
    assert isinstance(auth, SmartBackendClient)
    return auth


def _token(value: str = "tok-1", expires_in: Any = 300, **extra: Any) -> dict[str, Any]:
    return {"access_token": value, "token_type": "bearer", "expires_in": expires_in, **extra}


def _form(call: Any) -> dict[str, list[str]]:
    return parse_qs(call.request.body)


# --- the assertion and the token request ---------------------------------------------------


def test_token_request_form_and_signed_assertion(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    keypair: tuple[str, Any],
) -> None:
    alg, key = keypair
    rsps.post(TOKEN_URL, json=_token("abc", scope=" ".join(SCOPES)))
    auth = _client(monkeypatch, key, alg, clock, kid="key-2024")

    assert auth.headers() == {"Authorization": "Bearer abc"}

    (call,) = rsps.calls
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = _form(call)
    assert set(form) == {"grant_type", "scope", "client_assertion_type", "client_assertion"}
    assert form["grant_type"] == ["client_credentials"]
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert form["scope"] == ["system/Observation.cu system/Procedure.cu"]
    assertion = form["client_assertion"][0]
    assert jwt.get_unverified_header(assertion) == {"alg": alg, "kid": "key-2024", "typ": "JWT"}
    claims = jwt.decode(
        assertion,
        key.public_key(),
        algorithms=[alg],
        audience=TOKEN_URL,
        issuer=CLIENT_ID,
        # the fake clock stands still while the suite runs: exp is checked against it below
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"], "verify_exp": False},
    )
    assert claims["sub"] == CLIENT_ID
    assert claims["iat"] == START
    assert START < claims["exp"] <= START + 300
    assert uuid.UUID(claims["jti"]).version == 4


def test_each_assertion_has_a_new_jti_and_no_kid_unless_configured(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    auth = _client(monkeypatch, rsa_key, "RS384", clock)
    first, second = auth.client_assertion(), auth.client_assertion()
    assert jwt.get_unverified_header(first) == {"alg": "RS384", "typ": "JWT"}
    jtis = {
        jwt.decode(
            a,
            rsa_key.public_key(),
            algorithms=["RS384"],
            audience=TOKEN_URL,
            options={"verify_exp": False},  # the fake clock stands still
        )["jti"]
        for a in (first, second)
    }
    assert len(jtis) == 2


def test_scopes_may_be_a_space_separated_string(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    rsps.post(TOKEN_URL, json=_token())
    auth = _client(monkeypatch, ec_key, "ES384", clock, scopes="system/Task.cu  system/Task.rs")
    auth.headers()
    assert _form(rsps.calls[0])["scope"] == ["system/Task.cu system/Task.rs"]


# --- caching and refresh ------------------------------------------------------------------


def test_token_is_cached_across_headers_calls(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    rsps.post(TOKEN_URL, json=_token("cached"))
    auth = _client(monkeypatch, rsa_key, "RS384", clock)
    for _ in range(5):
        assert auth.headers() == {"Authorization": "Bearer cached"}
        clock.now += 10
    assert len(rsps.calls) == 1


def test_token_is_renewed_shortly_before_expiry(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    rsps.post(TOKEN_URL, json=_token("first", expires_in=300))
    rsps.post(TOKEN_URL, json=_token("second", expires_in=300))
    auth = _client(monkeypatch, rsa_key, "RS384", clock)

    assert auth.headers()["Authorization"] == "Bearer first"
    clock.now = START + 239  # 61 s left: still good
    assert auth.headers()["Authorization"] == "Bearer first"
    clock.now = START + 240  # 60 s left: the default margin
    assert auth.headers()["Authorization"] == "Bearer second"
    assert len(rsps.calls) == 2


def test_refresh_margin_never_exceeds_half_a_short_lifetime(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    rsps.post(TOKEN_URL, json=_token("short", expires_in=60))
    rsps.post(TOKEN_URL, json=_token("next", expires_in=60))
    auth = _client(monkeypatch, ec_key, "ES384", clock)
    assert auth.headers()["Authorization"] == "Bearer short"
    clock.now = START + 29
    assert auth.headers()["Authorization"] == "Bearer short"
    clock.now = START + 30
    assert auth.headers()["Authorization"] == "Bearer next"


def test_refresh_after_401_gives_a_new_token_once_per_token(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    for value in ("t1", "t2", "t2"):
        rsps.post(TOKEN_URL, json=_token(value))
    auth = _client(monkeypatch, rsa_key, "RS384", clock)

    assert auth.headers()["Authorization"] == "Bearer t1"
    assert auth.refresh() is True
    assert auth.refresh() is False  # nothing new to try yet
    assert auth.headers()["Authorization"] == "Bearer t2"
    assert auth.refresh() is True  # t2 was never refreshed
    assert auth.headers()["Authorization"] == "Bearer t2"  # the server handed t2 back
    assert auth.refresh() is False  # a second retry with t2 is pointless
    assert len(rsps.calls) == 3


def test_concurrent_callers_share_one_token_request(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    def slow_token(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        time.sleep(0.05)
        return 200, {}, '{"access_token": "shared", "token_type": "Bearer", "expires_in": 300}'

    rsps.add_callback(responses.POST, TOKEN_URL, callback=slow_token)
    auth = _client(monkeypatch, rsa_key, "RS384", clock)
    seen: list[dict[str, str]] = []
    threads = [threading.Thread(target=lambda: seen.append(auth.headers())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [{"Authorization": "Bearer shared"}] * 8
    assert len(rsps.calls) == 1


# --- token errors -------------------------------------------------------------------------


def _fail(auth: SmartBackendClient) -> TokenError:
    with pytest.raises(TokenError) as caught:
        auth.headers()
    return caught.value


def test_invalid_client_is_permanent_and_hides_the_assertion(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    def reject(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        assertion = parse_qs(request.body)["client_assertion"][0]  # type: ignore[type-var]
        body = f'{{"error": "invalid_client", "error_description": "bad jwt {assertion}"}}'
        return 400, {"Content-Type": "application/json"}, body

    rsps.add_callback(responses.POST, TOKEN_URL, callback=reject)
    err = _fail(_client(monkeypatch, rsa_key, "RS384", clock))

    assertion = _form(rsps.calls[0])["client_assertion"][0]
    assert (err.status, err.error, err.retryable) == (400, "invalid_client", False)
    assert err.error_description == "bad jwt [assertion]"
    assert "invalid_client" in str(err)
    assert "HTTP 400" in str(err)
    assert assertion not in str(err)
    assert err.__cause__ is None
    assert err.__suppress_context__ or err.__context__ is None


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_server_side_failures_are_retryable(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    ec_key: ec.EllipticCurvePrivateKey,
    status: int,
) -> None:
    rsps.post(TOKEN_URL, status=status, body="<html>busy</html>")
    err = _fail(_client(monkeypatch, ec_key, "ES384", clock))
    assert (err.status, err.error, err.retryable) == (status, None, True)
    assert f"HTTP {status}" in str(err)


@pytest.mark.parametrize(
    "exc", [requests.ConnectionError("refused"), requests.ConnectTimeout("slow")]
)
def test_connection_failures_are_retryable(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    exc: Exception,
) -> None:
    rsps.post(TOKEN_URL, body=exc)
    err = _fail(_client(monkeypatch, rsa_key, "RS384", clock))
    assert (err.status, err.retryable) == (None, True)
    assert TOKEN_URL in str(err)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("not json at all", "not a JSON object"),
        ('["access_token"]', "not a JSON object"),
        ('{"token_type": "bearer", "expires_in": 300}', "without an access_token"),
        ('{"access_token": "s3cr3t-tok", "token_type": "mac"}', "token_type other than bearer"),
        ('{"access_token": "s3cr3t-tok", "token_type": "bearer", "expires_in": -5}', "expires_in"),
    ],
)
def test_unusable_token_responses_are_permanent_and_hide_the_token(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    body: str,
    why: str,
) -> None:
    rsps.post(TOKEN_URL, body=body, content_type="application/json")
    err = _fail(_client(monkeypatch, rsa_key, "RS384", clock))
    assert why in str(err)
    assert (err.status, err.retryable) == (200, False)
    assert "s3cr3t-tok" not in str(err)


def test_token_type_is_case_insensitive_and_expires_in_defaults(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    rsps.post(TOKEN_URL, json={"access_token": "ok", "token_type": "Bearer"})
    rsps.post(TOKEN_URL, json={"access_token": "ok2", "token_type": "BEARER"})
    auth = _client(monkeypatch, rsa_key, "RS384", clock)
    assert auth.headers()["Authorization"] == "Bearer ok"
    clock.now = START + 239  # default lifetime 300 s, renewed 60 s early
    assert auth.headers()["Authorization"] == "Bearer ok"
    clock.now = START + 240
    assert auth.headers()["Authorization"] == "Bearer ok2"


def test_redirects_are_not_followed(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    rsps.post(TOKEN_URL, status=307, headers={"Location": "https://elsewhere.example/token"})
    err = _fail(_client(monkeypatch, rsa_key, "RS384", clock))
    assert (err.status, err.retryable) == (307, False)
    assert len(rsps.calls) == 1


# --- static bearer and no auth ------------------------------------------------------------


def test_bearer_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "env-token\n")
    auth = partner_auth("bearer", {"token_env": TOKEN_ENV})
    assert auth.headers() == {"Authorization": "Bearer env-token"}
    assert auth.refresh() is False
    assert "env-token" not in repr(auth)


def test_bearer_token_from_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("file-token\n")
    auth = partner_auth("bearer", {"token_file": str(path)})
    assert isinstance(auth, BearerAuth)
    assert auth.headers() == {"Authorization": "Bearer file-token"}
    assert auth.refresh() is False


def test_no_auth() -> None:
    auth = partner_auth("none", {})
    assert isinstance(auth, NoAuth)
    assert auth.headers() == {}
    assert auth.refresh() is False


# --- secrets ------------------------------------------------------------------------------


def test_missing_env_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(SecretUnavailable, match=f"environment variable {TOKEN_ENV} is not set"):
        partner_auth("bearer", {"token_env": TOKEN_ENV})


def test_missing_file_secret_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    with pytest.raises(SecretUnavailable, match=r"absent\.pem cannot be read") as caught:
        partner_auth("smart", _settings("ES384", key_env=None, key_file=str(path)))
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("content", [b"   \n", b"\xffsecret-\xfe-bytes"])
def test_unusable_secret_file_messages_omit_the_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(SecretUnavailable) as caught:
        partner_auth("bearer", {"token_file": str(path)})
    assert str(path) in str(caught.value)
    assert "secret" not in str(caught.value).replace(str(tmp_path), "")


def test_a_bad_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "hunter2-not-a-pem-key")
    with pytest.raises(AuthConfigError) as caught:
        partner_auth("smart", _settings("RS384"))
    assert KEY_ENV in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_exactly_one_secret_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(TOKEN_ENV, "x")
    with pytest.raises(AuthConfigError, match="exactly one of token_env or token_file"):
        partner_auth("bearer", {"token_env": TOKEN_ENV, "token_file": str(tmp_path / "t")})
    with pytest.raises(AuthConfigError, match="exactly one of token_env or token_file"):
        partner_auth("bearer", {})


# --- configuration-time refusals ----------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "RS256", "ES256", "PS384", None])
def test_unsupported_algorithms_are_refused_before_any_secret_is_read(
    monkeypatch: pytest.MonkeyPatch, alg: str | None
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)  # would raise SecretUnavailable if read
    with pytest.raises(AuthConfigError, match="is not supported; use one of RS384, ES384"):
        partner_auth("smart", _settings(alg))  # type: ignore[arg-type]


def test_alg_none_is_refused_by_the_client_too(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(AuthConfigError, match="'none' is not supported"):
        SmartBackendClient(
            client_id=CLIENT_ID,
            token_url=TOKEN_URL,
            private_key=_pem(rsa_key),
            alg="none",
            scopes=SCOPES,
        )


def test_key_must_suit_the_algorithm(
    monkeypatch: pytest.MonkeyPatch,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    clock: FakeClock,
) -> None:
    with pytest.raises(AuthConfigError, match="does not suit ES384"):
        _client(monkeypatch, rsa_key, "ES384", clock)
    with pytest.raises(AuthConfigError, match="does not suit RS384"):
        _client(monkeypatch, ec_key, "RS384", clock)
    with pytest.raises(AuthConfigError, match="does not suit ES384"):
        _client(monkeypatch, ec.generate_private_key(ec.SECP256R1()), "ES384", clock)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(AuthConfigError, match="1024 bits"):
        _client(monkeypatch, weak, "RS384", clock)


def test_public_or_encrypted_keys_are_refused(
    monkeypatch: pytest.MonkeyPatch, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    public = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encrypted = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    for pem in (public, encrypted):
        monkeypatch.setenv(KEY_ENV, pem.decode())
        with pytest.raises(AuthConfigError, match="not an unencrypted PEM private key"):
            partner_auth("smart", _settings("ES384"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client_id": ""}, "client_id"),
        ({"token_url": None}, "token_url"),
        ({"token_url": "http://auth.example/token"}, "https"),
        ({"token_url": "ftp://auth.example/token"}, "https"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "  "}, "scopes"),
        ({"scopes": [1, 2]}, "scopes"),
        ({"kid": 7}, "kid"),
    ],
)
def test_bad_smart_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    ec_key: ec.EllipticCurvePrivateKey,
    change: dict[str, Any],
    message: str,
) -> None:
    monkeypatch.setenv(KEY_ENV, _pem(ec_key))
    with pytest.raises(AuthConfigError, match=message):
        partner_auth("smart", {**_settings("ES384"), **change})


def test_loopback_http_token_url_is_allowed(
    monkeypatch: pytest.MonkeyPatch, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    monkeypatch.setenv(KEY_ENV, _pem(ec_key))
    auth = partner_auth("smart", _settings("ES384", token_url="http://127.0.0.1:8081/token"))
    assert isinstance(auth, SmartBackendClient)
    assert "PRIVATE" not in repr(auth)


def test_unknown_auth_kind_is_refused() -> None:
    with pytest.raises(AuthConfigError, match="'basic' is not one of none, bearer, smart"):
        partner_auth("basic", {})
