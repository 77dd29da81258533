"""SMART Backend Services client: access tokens via a signed JWT client assertion.

SMART App Launch 2.2 "client-confidential-asymmetric" (domain.md section 4): the client signs a
short-lived JWT (RS384 or ES384, via PyJWT) and POSTs it to the token endpoint with
``grant_type=client_credentials``. Tokens are cached until shortly before they expire; one
thread fetches at a time. Neither the assertion nor a token ever appears in an error or a log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from fhir_bridge.exchange.secrets import AuthConfigError

log = logging.getLogger(__name__)

#: The only signing algorithms SMART Backend Services defines; anything else (``none``,
#: HS256, RS256, ...) is refused when the client is configured.
ALGORITHMS = ("RS384", "ES384")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART: the assertion's ``exp`` is no more than five minutes in the future.
MAX_ASSERTION_LIFETIME = 300
#: Used when the token response has no ``expires_in`` (SMART recommends 300 s).
DEFAULT_EXPIRES_IN = 300
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_DESCRIPTION_LIMIT = 200


class TokenError(Exception):
    """No access token: ``status`` (HTTP, None without a response), OAuth ``error`` and
    ``error_description`` when the endpoint sent JSON, ``retryable`` for transient failures."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.error_description = error_description
        self.retryable = retryable


@dataclass(frozen=True)
class AccessToken:
    """A cached access token; ``value`` stays out of ``repr``."""

    value: str = field(repr=False)
    expires_at: float
    refresh_at: float
    scope: str | None


def _fingerprint(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def check_algorithm(alg: object) -> str:
    """``alg`` if SMART allows it (RS384, ES384).

    :raise AuthConfigError: for anything else, ``none`` included.
    """
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise AuthConfigError(f"alg {alg!r} is not supported; use one of {', '.join(ALGORITHMS)}")
    return alg


def _check_token_url(token_url: str) -> None:
    parts = urlsplit(token_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise AuthConfigError("token_url must be an absolute https URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise AuthConfigError("token_url must use https (plain http only on loopback)")


def _load_key(private_key: str | bytes, alg: str, key_label: str) -> Any:
    """Parse a PEM private key and check it suits ``alg`` (type, curve, RSA size) via PyJWT."""
    data = private_key.encode() if isinstance(private_key, str) else private_key
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuthConfigError(f"{key_label} is not an unencrypted PEM private key") from None
    algorithm = jwt.get_algorithm_by_name(alg)
    try:
        prepared = algorithm.prepare_key(key)  # type: ignore[arg-type]
    except (jwt.InvalidKeyError, TypeError):
        raise AuthConfigError(f"{key_label} does not suit {alg}") from None
    weak = algorithm.check_key_length(prepared)
    if weak:
        raise AuthConfigError(f"{key_label}: {weak}")
    return prepared


class SmartBackendClient:
    """OAuth client credentials with a JWT client assertion; a ``PartnerAuth``.

    :raise AuthConfigError: at construction, for an unsupported ``alg`` (including ``none``),
        a key that is not a PEM private key suiting ``alg``, an RSA key under 2048 bits, a
        non-https token URL (loopback http allowed), no scopes, or out-of-range timings.
    """

    def __init__(
        self,
        *,
        client_id: str,
        token_url: str,
        private_key: str | bytes,
        alg: str,
        scopes: Sequence[str],
        kid: str | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 60.0,
        assertion_lifetime: int = 270,
        timeout: float | tuple[float, float] = (5.0, 20.0),
        key_label: str = "the private key",
    ) -> None:
        check_algorithm(alg)
        if not client_id:
            raise AuthConfigError("client_id is required")
        _check_token_url(token_url)
        if not scopes or any(not s or s != s.strip() or " " in s for s in scopes):
            raise AuthConfigError("scopes must be one or more non-empty scope strings")
        if not 0 < assertion_lifetime <= MAX_ASSERTION_LIFETIME:
            raise AuthConfigError(f"assertion_lifetime must be 1..{MAX_ASSERTION_LIFETIME} s")
        if refresh_margin < 0:
            raise AuthConfigError("refresh_margin must not be negative")
        self.client_id = client_id
        self.token_url = token_url
        self.alg = alg
        self.kid = kid
        self.scope = " ".join(scopes)
        self._key = _load_key(private_key, alg, key_label)
        self._session = session or requests.Session()
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._assertion_lifetime = assertion_lifetime
        self._timeout = timeout
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self._refreshed: bytes | None = None

    def __repr__(self) -> str:
        return f"SmartBackendClient(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def client_assertion(self) -> str:
        """A freshly signed authentication JWT (new ``jti`` each call)."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + self._assertion_lifetime,
            "jti": str(uuid.uuid4()),
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.kid:
            headers["kid"] = self.kid
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)

    def access_token(self) -> str:
        """A valid access token: the cached one, or a new one once it is near expiry.

        :raise TokenError: if the token endpoint fails or answers something unusable.
        """
        with self._lock:
            token = self._token
            if token is None or self._clock() >= token.refresh_at:
                token = self._token = self._fetch()
            return token.value

    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>`` for a request to the partner's FHIR server."""
        return {"Authorization": f"Bearer {self.access_token()}"}

    def refresh(self) -> bool:
        """Drop the cached token after a 401; True once per token (worth one retry)."""
        with self._lock:
            token, self._token = self._token, None
            if token is None:
                return False
            fingerprint = _fingerprint(token.value)
            if fingerprint == self._refreshed:
                return False
            self._refreshed = fingerprint
            return True

    def _fetch(self) -> AccessToken:
        assertion = self.client_assertion()
        started = self._clock()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        try:
            response = self._session.post(
                self.token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TokenError(
                f"token endpoint {self.token_url} could not be reached ({type(exc).__name__})",
                retryable=True,
            ) from None
        except requests.RequestException as exc:
            raise TokenError(
                f"token request to {self.token_url} failed ({type(exc).__name__})"
            ) from None
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if response.status_code != 200:
            raise self._http_error(response.status_code, body, assertion)
        token = self._parse(body, started)
        log.info(
            "SMART token for %s from %s, expires in %d s, scope %s",
            self.client_id,
            self.token_url,
            round(token.expires_at - started),
            token.scope or self.scope,
        )
        return token

    def _http_error(self, status: int, body: Any, assertion: str) -> TokenError:
        error = description = None
        if isinstance(body, dict):
            if isinstance(body.get("error"), str):
                error = body["error"][:_DESCRIPTION_LIMIT]
            if isinstance(body.get("error_description"), str):
                description = body["error_description"].replace(assertion, "[assertion]")
                description = description[:_DESCRIPTION_LIMIT]
        message = f"token endpoint {self.token_url} answered HTTP {status}"
        if error:
            message += f": {error}"
        if description:
            message += f" ({description})"
        retryable = status in (408, 429) or status >= 500
        return TokenError(
            message, status=status, error=error, error_description=description, retryable=retryable
        )

    def _parse(self, body: Any, started: float) -> AccessToken:
        def bad(why: str) -> TokenError:
            return TokenError(f"token endpoint {self.token_url} answered {why}", status=200)

        if not isinstance(body, dict):
            raise bad("with something that is not a JSON object")
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise bad("without an access_token")
        token_type = body.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise bad("a token_type other than bearer")
        expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise bad("an expires_in that is not a positive integer")
        scope = body.get("scope") if isinstance(body.get("scope"), str) else None
        # Refresh ``refresh_margin`` before expiry, but never spend more than half the lifetime
        # in the margin (a 60 s token would otherwise be stale on arrival).
        margin = min(self._refresh_margin, expires_in / 2)
        expires_at = started + expires_in
        return AccessToken(value, expires_at, expires_at - margin, scope)
