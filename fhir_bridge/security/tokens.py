"""Access tokens the bridge issues, and the client assertions it accepts (PyJWT, no own crypto).

Access tokens are short-lived JWTs (HS256 with the store's signing key): any process of the
same store can check one without a database round trip. Client assertions are the SMART
Backend Services ``private_key_jwt``: RS384 or ES384, signed with the client's private key and
checked against its registered public JWKS.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

ACCESS_TOKEN_SECONDS = 300
MAX_ASSERTION_SECONDS = 300
CLOCK_SKEW_SECONDS = 5
ASSERTION_ALGORITHMS = ("RS384", "ES384")
_KTY = {"RS384": "RSA", "ES384": "EC"}
#: longest client id and assertion jti the store keeps (api_client / assertion_jti columns)
MAX_CLIENT_ID_CHARS = 128
MAX_JTI_CHARS = 256


def _storable(value: str, limit: int) -> bool:
    """Fits its column, and holds no NUL (PostgreSQL text cannot)."""
    return 0 < len(value) <= limit and "\x00" not in value


_ACCESS_ALGORITHM = "HS256"


def epoch_seconds(at: datetime) -> float:
    """Seconds since the epoch; a naive datetime is UTC (the store's convention), not local."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


class TokenInvalid(Exception):
    """An access token or client assertion was refused; ``reason`` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedToken:
    """An access token and what the token response says about it."""

    access_token: str
    expires_in: int
    scope: str
    jti: str


def issue_access_token(
    secret: str,
    *,
    issuer: str,
    audience: str,
    client_id: str,
    role: str,
    organization: str | None,
    scope: str,
    now: datetime,
    lifetime: int = ACCESS_TOKEN_SECONDS,
) -> IssuedToken:
    """Sign an access token for a client (``lifetime`` seconds, at most 300)."""
    lifetime = min(lifetime, ACCESS_TOKEN_SECONDS)
    jti = uuid.uuid4().hex
    iat = int(epoch_seconds(now))
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": client_id,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": jti,
        "scope": scope,
        "role": role,
        "org": organization,
    }
    token = jwt.encode(claims, secret, algorithm=_ACCESS_ALGORITHM, headers={"typ": "JWT"})
    return IssuedToken(token, lifetime, scope, jti)


def verify_access_token(
    token: str, secret: str, *, issuer: str, audience: str, now: datetime
) -> dict[str, Any]:
    """The claims of a valid access token; TokenInvalid for anything else (expired, alg none...)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenInvalid("The access token is malformed") from None
    if header.get("alg") != _ACCESS_ALGORITHM:
        raise TokenInvalid("The access token is not signed by this server")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ACCESS_ALGORITHM],
            audience=audience,
            issuer=issuer,
            # exp is checked below against ``now``, so tests can move the clock
            options={"require": ["exp", "iat", "sub", "jti"], "verify_exp": False},
        )
    except jwt.InvalidSignatureError:
        raise TokenInvalid("The access token signature is not valid") from None
    except jwt.InvalidTokenError:
        raise TokenInvalid("The access token is not valid") from None
    exp = claims["exp"]
    if not isinstance(exp, int | float) or exp <= epoch_seconds(now):
        raise TokenInvalid("The access token has expired")
    return claims


@dataclass(frozen=True)
class AssertionHeader:
    """What the unverified assertion says about itself: who signed it and with which key."""

    client_id: str
    algorithm: str
    kid: str
    jku: str | None


def read_assertion_header(assertion: str) -> AssertionHeader:
    """Parse (not verify) a client assertion's header and issuer; TokenInvalid when malformed."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except (jwt.InvalidTokenError, RecursionError):
        raise TokenInvalid("The client assertion is not a JWT") from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise TokenInvalid("The client assertion must be signed with RS384 or ES384")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenInvalid("The client assertion header has no kid")
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise TokenInvalid("The client assertion has no iss")
    if not _storable(iss, MAX_CLIENT_ID_CHARS):
        raise TokenInvalid("The client assertion iss is not a client id of this server")
    jku = header.get("jku")
    return AssertionHeader(iss, alg, kid, jku if isinstance(jku, str) else None)


def select_key(jwks: dict[str, Any], header: AssertionHeader) -> Any:
    """The public key of ``jwks`` whose kid and kty fit the assertion; TokenInvalid if none."""
    for jwk in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if jwk.get("kid") == header.kid and jwk.get("kty") == _KTY[header.algorithm]:
            try:
                return jwt.PyJWK(jwk, algorithm=header.algorithm).key
            except jwt.PyJWKError:
                raise TokenInvalid("The client's registered key cannot be used") from None
    raise TokenInvalid("No registered key of the client matches the assertion's kid")


def verify_assertion(
    assertion: str, key: Any, header: AssertionHeader, *, token_url: str, now: datetime
) -> dict[str, Any]:
    """Claims of a valid client assertion: iss = sub = client, aud = token URL, exp <= 5 min."""
    try:
        claims = jwt.decode(
            assertion,
            key,
            algorithms=[header.algorithm],
            audience=token_url,
            issuer=header.client_id,
            options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_exp": False},
        )
    except jwt.InvalidSignatureError:
        raise TokenInvalid("The client assertion signature is not valid") from None
    except jwt.InvalidAudienceError:
        raise TokenInvalid("The client assertion aud is not this token endpoint") from None
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(f"The client assertion is not valid: {exc}") from None
    except RecursionError:
        raise TokenInvalid("The client assertion is not valid: nested too deeply") from None
    if claims["sub"] != claims["iss"]:
        raise TokenInvalid("The client assertion sub must equal iss")
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise TokenInvalid("The client assertion exp is not a number")
    if exp <= epoch_seconds(now):
        raise TokenInvalid("The client assertion has expired")
    if exp > epoch_seconds(now) + MAX_ASSERTION_SECONDS + CLOCK_SKEW_SECONDS:
        raise TokenInvalid("The client assertion exp is more than 5 minutes ahead")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise TokenInvalid("The client assertion has no jti")
    if not _storable(claims["jti"], MAX_JTI_CHARS):
        raise TokenInvalid(
            f"The client assertion jti must be 1-{MAX_JTI_CHARS} characters, without NUL"
        )
    return claims


def parse_jwks(text: str) -> dict[str, Any]:
    """A JWKS document; ValueError unless it is ``{"keys": [...]}`` with kty and kid on each."""
    doc = json.loads(text)
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError("a JWKS needs a non-empty keys list")
    for jwk in keys:
        if not isinstance(jwk, dict) or not jwk.get("kty") or not jwk.get("kid"):
            raise ValueError("every key needs kty and kid")
        if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi")):
            raise ValueError("the JWKS holds a private key: register the public key only")
    return doc
