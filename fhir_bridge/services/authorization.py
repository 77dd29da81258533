"""The token endpoint's work: check a client assertion against the registry, grant scopes, sign.

SMART Backend Services (SMART App Launch 2.2): ``client_credentials`` with a ``private_key_jwt``
assertion. Errors are RFC 6749 section 5.2 codes; authentication failures are ``invalid_client``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from fhir_bridge.security.principal import Principal
from fhir_bridge.security.scopes import grant
from fhir_bridge.security.tokens import (
    IssuedToken,
    TokenInvalid,
    epoch_seconds,
    issue_access_token,
    read_assertion_header,
    select_key,
    verify_access_token,
    verify_assertion,
)
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.clients import ClientRow, ClientStore
from fhir_bridge.store.db import read_session, write_session

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWKS_FETCH_TIMEOUT_SECONDS = 5

JwksFetcher = Callable[[str], dict[str, Any]]


class OAuthError(Exception):
    """A token request refused: RFC 6749 ``error`` code, a description, the HTTP status."""

    def __init__(
        self, error: str, description: str, status: int = 400, client_id: str = ""
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.client_id = client_id


@dataclass(frozen=True)
class Grant:
    """A token issued to a client."""

    token: IssuedToken
    client: ClientRow


def token_url(runtime: Runtime) -> str:
    """The token endpoint's absolute URL: the only ``aud`` a client assertion may carry."""
    return runtime.settings.public_base_url.rstrip("/") + "/auth/token"


def fetch_jwks(url: str) -> dict[str, Any]:
    """Fetch a client's published JWKS (no cache: keys rotate, and tokens are rare)."""
    response = requests.get(url, timeout=JWKS_FETCH_TIMEOUT_SECONDS, allow_redirects=False)
    response.raise_for_status()
    return response.json()


def utcnow() -> datetime:
    """Now, naive UTC (the store's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def signing_secret(runtime: Runtime) -> str:
    """The access-token secret of this store (made on first use)."""
    with write_session(runtime.sessions) as session:
        return ClientStore(session).signing_secret(now=utcnow())


def exchange_assertion(
    runtime: Runtime,
    form: Mapping[str, str],
    *,
    secret: str,
    now: datetime | None = None,
    jwks_fetcher: JwksFetcher = fetch_jwks,
) -> Grant:
    """Validate a ``client_credentials`` request and issue an access token; OAuthError if not."""
    now = now or utcnow()
    if form.get("grant_type") != "client_credentials":
        raise OAuthError("unsupported_grant_type", "Only client_credentials is supported")
    if form.get("client_assertion_type") != JWT_BEARER:
        raise OAuthError("invalid_request", f"client_assertion_type must be {JWT_BEARER}")
    assertion = form.get("client_assertion") or ""
    if not assertion:
        raise OAuthError("invalid_request", "client_assertion is required")
    try:
        header = read_assertion_header(assertion)
    except TokenInvalid as exc:
        raise OAuthError("invalid_client", exc.reason, 401) from None
    client_id = header.client_id
    with read_session(runtime.sessions) as session:
        client = ClientStore(session).get(client_id)
    if client is None or not client.enabled:
        raise OAuthError("invalid_client", "The client is unknown or disabled", 401, client_id)
    if header.jku is not None and header.jku != client.jwks_url:
        raise OAuthError(
            "invalid_client", "jku is not the client's registered JWKS URL", 401, client_id
        )
    try:
        jwks = client.jwks if client.jwks else jwks_fetcher(client.jwks_url or "")
    except (requests.RequestException, ValueError, RecursionError):
        raise OAuthError(
            "invalid_client", "The client's JWKS URL could not be read", 401, client_id
        ) from None
    try:
        key = select_key(jwks, header)
        claims = verify_assertion(assertion, key, header, token_url=token_url(runtime), now=now)
    except TokenInvalid as exc:
        raise OAuthError("invalid_client", exc.reason, 401, client_id) from None
    # The signature holds: the jti is spent now, whatever the answer (SMART Backend Services:
    # a jti already seen is refused), so an assertion refused below cannot be sent again.
    expires_at = datetime.fromtimestamp(claims["exp"], UTC).replace(tzinfo=None)
    with write_session(runtime.sessions) as session:
        fresh = ClientStore(session).claim_jti(
            client_id, claims["jti"], expires_at=expires_at, now=now
        )
    if not fresh:
        raise OAuthError(
            "invalid_client", "The client assertion jti was already used", 401, client_id
        )
    scopes = grant(form.get("scope", ""), client.scopes)
    if not scopes:
        raise OAuthError(
            "invalid_scope",
            "None of the requested scopes is granted to this client (only resource types this "
            "server serves, or *)",
            400,
            client_id,
        )
    token = issue_access_token(
        secret,
        issuer=runtime.settings.public_base_url.rstrip("/"),
        audience=runtime.settings.fhir_base_url,
        client_id=client_id,
        role=client.role,
        organization=client.organization,
        scope=" ".join(s.text for s in scopes),
        now=now,
    )
    return Grant(token, client)


class VerifiedTokens:
    """Tokens already verified in this process, with their caller and expiry (bounded).

    A client sends the same token for up to 5 minutes; checking its signature once saves
    ~0.1 ms a request. The expiry is still checked on every request.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()  # put evicts; gets stay lock-free (dict reads are atomic)

    def get(self, token: str, now: datetime) -> Principal | None:
        """The caller of a token verified before and not yet expired."""
        hit = self._cache.get(token)
        if hit is None:
            return None
        if hit[0] <= epoch_seconds(now):
            with self._lock:
                self._cache.pop(token, None)
            return None
        return hit[1]

    def put(self, token: str, exp: float, principal: Principal) -> None:
        """Remember a verified token (the oldest entries go first when full)."""
        with self._lock:
            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[token] = (exp, principal)


def authenticate(
    runtime: Runtime,
    token: str,
    *,
    secret: str,
    now: datetime | None = None,
    verified: VerifiedTokens | None = None,
) -> Principal:
    """The caller of a bearer token; TokenInvalid when it is not one of ours or has expired."""
    now = now or utcnow()
    if verified is not None and (known := verified.get(token, now)) is not None:
        return known
    claims = verify_access_token(
        token,
        secret,
        issuer=runtime.settings.public_base_url.rstrip("/"),
        audience=runtime.settings.fhir_base_url,
        now=now,
    )
    principal = Principal.from_claims(claims)
    if verified is not None:
        verified.put(token, float(claims["exp"]), principal)
    return principal


def smart_configuration(runtime: Runtime) -> dict[str, Any]:
    """The ``.well-known/smart-configuration`` document for backend services."""
    return {
        "issuer": runtime.settings.public_base_url.rstrip("/"),
        "token_endpoint": token_url(runtime),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.rs", "system/*.read", "system/Task.cu", "system/*.cruds"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "code_challenge_methods_supported": ["S256"],
    }


def token_response(grant_: Grant) -> dict[str, Any]:
    """The JSON body of a successful token response."""
    return {
        "access_token": grant_.token.access_token,
        "token_type": "bearer",
        "expires_in": grant_.token.expires_in,
        "scope": grant_.token.scope,
    }


def oauth_error_body(exc: OAuthError) -> str:
    """The JSON body of an RFC 6749 error response."""
    return json.dumps({"error": exc.error, "error_description": exc.description})


def _quotable(text: str) -> str:
    """RFC 6749 5.2 error_description characters: printable ASCII without ``"`` and ``\\``."""
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')


def oauth_challenge(exc: OAuthError) -> str | None:
    """The ``WWW-Authenticate`` value of a 401 from the token endpoint (RFC 6749 5.2 asks for
    one on 401; the scheme and parameters are RFC 6750 3's), None for other statuses."""
    if exc.status != 401:
        return None
    return (
        f'Bearer realm="fhir-bridge", error="{_quotable(exc.error)}", '
        f'error_description="{_quotable(exc.description)}"'
    )
