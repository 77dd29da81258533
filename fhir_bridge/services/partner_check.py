"""Testing a partner's connection: can we authenticate and read its CapabilityStatement?

One ``GET [base]/metadata`` with the partner's own auth (a SMART partner first gets a token,
so the key and the token endpoint are tested too) and the fetch timeout. The result names the
HTTP status, the server's FHIR version and software, or why it failed; never a secret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from fhir_bridge.exchange.auth import partner_auth
from fhir_bridge.services import partners
from fhir_bridge.services.runtime import Runtime

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class ConnectionCheck:
    """What a connection test found."""

    ok: bool
    message: str
    status: int | None = None
    milliseconds: float = 0.0


def check_partner(
    runtime: Runtime, key: str, *, http: requests.Session | None = None
) -> ConnectionCheck:
    """Read the partner's ``/metadata`` with its auth (UnknownPartner when there is none)."""
    partner = partners.find_partner(runtime, key)
    if partner is None:
        raise partners.UnknownPartner(key)
    http = http or requests.Session()
    started = time.perf_counter()
    try:
        auth = partner_auth(partner.auth_kind, partner.auth, session=http)
        headers = {"Accept": FHIR_JSON, **auth.headers()}
    except Exception as exc:  # secrets, token endpoint: the type names the cause, no secret
        return ConnectionCheck(False, f"No credentials for the partner ({type(exc).__name__})")
    url = partner.base_url.rstrip("/") + "/metadata"
    try:
        resp = http.get(url, headers=headers, timeout=runtime.settings.fetch_timeout_seconds)
    except requests.RequestException as exc:
        return ConnectionCheck(False, f"Could not reach {url} ({type(exc).__name__})")
    ms = round((time.perf_counter() - started) * 1000, 1)
    if resp.status_code != 200:
        return ConnectionCheck(
            False, f"{url} answered HTTP {resp.status_code}", resp.status_code, ms
        )
    try:
        body = resp.json()
    except ValueError:
        return ConnectionCheck(False, f"{url} did not answer JSON", resp.status_code, ms)
    if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
        return ConnectionCheck(
            False, f"{url} did not answer a CapabilityStatement", resp.status_code, ms
        )
    software = (
        body.get("software", {}).get("name") if isinstance(body.get("software"), dict) else None
    )
    version = body.get("fhirVersion", "unknown")
    detail = f"FHIR {version}" + (f", {software}" if software else "")
    return ConnectionCheck(True, f"Connected: {detail} in {ms:g} ms", resp.status_code, ms)
