"""Outbound auth for partner requests: none, a static bearer token, or SMART Backend Services.

``partner_auth(partner.auth_kind, partner.auth)`` builds the provider once per partner; the
delivery worker adds ``headers()`` to each request and, after a 401, retries once if
``refresh()`` says a retry makes sense.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import requests

from fhir_bridge.exchange.secrets import (
    AuthConfigError,
    SecretUnavailable,
    read_secret,
    secret_source,
)
from fhir_bridge.exchange.smart import (
    ALGORITHMS,
    SmartBackendClient,
    TokenError,
    check_algorithm,
)

__all__ = [
    "ALGORITHMS",
    "AuthConfigError",
    "BearerAuth",
    "NoAuth",
    "PartnerAuth",
    "SecretUnavailable",
    "SmartBackendClient",
    "TokenError",
    "partner_auth",
]


class PartnerAuth(Protocol):
    """Supplies auth headers for requests to one partner."""

    def headers(self) -> dict[str, str]:
        """Headers to add to the next request (may fetch a token: SMART raises TokenError)."""
        ...

    def refresh(self) -> bool:
        """After a 401: drop cached credentials; True when one retry makes sense."""
        ...


class NoAuth:
    """No credentials at all."""

    def headers(self) -> dict[str, str]:
        """No headers."""
        return {}

    def refresh(self) -> bool:
        """Nothing to refresh: a 401 is final."""
        return False


class BearerAuth:
    """A static bearer token, read once when the provider is built."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"

    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>``."""
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self) -> bool:
        """A static token cannot be renewed: a 401 is final."""
        return False


def _scopes(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        return [s for s in value if s.strip()]
    raise AuthConfigError("scopes must be a list of strings or a space-separated string")


def _setting(auth: Mapping[str, Any], key: str) -> str:
    value = auth.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AuthConfigError(f"auth setting {key} must be a non-empty string")
    return value


def partner_auth(
    auth_kind: str,
    auth: Mapping[str, Any],
    *,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.time,
) -> PartnerAuth:
    """Build the provider for ``auth_kind`` ("none" | "bearer" | "smart") from ``auth``.

    bearer: ``token_env`` or ``token_file``. smart: ``client_id``, ``token_url``, ``key_env``
    or ``key_file`` (PEM private key), ``alg`` ("RS384" | "ES384"), ``scopes`` (list or
    space-separated), optional ``kid``.

    :raise AuthConfigError: for an unknown kind or unusable settings (checked here, not on
        first use; the algorithm is checked before any secret is read).
    :raise SecretUnavailable: if the token or key is missing (the message names its source).
    """
    if auth_kind == "none":
        return NoAuth()
    if auth_kind == "bearer":
        return BearerAuth(read_secret(auth, "token"))
    if auth_kind != "smart":
        raise AuthConfigError(f"auth kind {auth_kind!r} is not one of none, bearer, smart")
    alg = check_algorithm(auth.get("alg"))
    kid = _setting(auth, "kid") if auth.get("kid") is not None else None
    scopes = _scopes(auth.get("scopes"))
    source = secret_source(auth, "key")
    return SmartBackendClient(
        client_id=_setting(auth, "client_id"),
        token_url=_setting(auth, "token_url"),
        private_key=read_secret(auth, "key"),
        alg=alg,
        scopes=scopes,
        kid=kid,
        session=session,
        clock=clock,
        key_label=f"the private key in {source}",
    )
