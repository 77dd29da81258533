"""A small FHIR REST client on ``requests``: read one resource by its absolute URL.

Only servers the operator registered may be contacted (an absolute reference in an inbound
payload must not make the bridge call arbitrary hosts). Failures raise ``FetchError`` with a
message safe to show the sender (no response bodies: they may carry PHI).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests

from fhir_bridge.fhir import jsonio

FHIR_JSON = "application/fhir+json"


class FetchError(Exception):
    """The resource could not be read; ``status`` is the HTTP status to answer our client."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


def registered_base(url: str, bases: Sequence[str]) -> str | None:
    """The registered FHIR base ``url`` lives under, if any (exact prefix at a path boundary)."""
    for base in bases:
        root = base.rstrip("/") + "/"
        if url.startswith(root):
            return base
    return None


def read_absolute(
    url: str,
    *,
    bases: Sequence[str],
    timeout: float = 10.0,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """GET ``url`` (a ``[base]/Type/id`` on a registered server) and return the resource."""
    base = registered_base(url, bases)
    if base is None:
        raise FetchError("The URL is not on a registered physician server", status=422)
    expected_type = url[len(base.rstrip("/")) + 1 :].split("/")[0]
    http = session or requests
    try:
        response = http.get(url, headers={"Accept": FHIR_JSON}, timeout=timeout)
    except requests.Timeout:
        raise FetchError(f"{base} did not answer within {timeout:g} s", status=504) from None
    except requests.RequestException as exc:
        raise FetchError(f"{base} could not be reached ({type(exc).__name__})") from None
    if response.status_code in (404, 410):
        raise FetchError(f"{base} has no such resource (HTTP {response.status_code})", 422)
    if response.status_code != 200:
        raise FetchError(f"{base} answered HTTP {response.status_code}")
    try:
        body = jsonio.loads(response.content)
    except jsonio.JsonError:
        raise FetchError(f"{base} answered with something that is not JSON") from None
    if not isinstance(body, dict) or body.get("resourceType") != expected_type:
        raise FetchError(f"{base} answered with something that is not a {expected_type}")
    return body
