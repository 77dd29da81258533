"""Authorization for every endpoint: SMART discovery, the token endpoint, and the request guard.

Open without a token: health checks, ``/fhir/metadata``, SMART configuration and the token
endpoint. Everything else needs a bearer token this bridge issued: 401 with
``WWW-Authenticate`` when it is missing or not valid, 403 with an OperationOutcome when its
scopes or its role do not allow the request, 429 with ``Retry-After`` past the rate limit.
"""

from __future__ import annotations

import atexit
import hmac
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from threading import Lock
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from fhir_bridge.api import disclosure
from fhir_bridge.api.http import fhir_response, runtime
from fhir_bridge.fhir.outcome import Issue, error, operation_outcome
from fhir_bridge.mapping.audit_event import Access, access_event, token_event
from fhir_bridge.security.principal import Principal
from fhir_bridge.security.scopes import parse_scopes
from fhir_bridge.security.tokens import TokenInvalid
from fhir_bridge.services import access_policy, audit, authorization
from fhir_bridge.services.access_policy import MemberScope
from fhir_bridge.services.audit import AuditTrail
from fhir_bridge.settings import DEFAULT_INSTANCE_DIR, Settings

auth_api = Blueprint("auth_api", __name__)

#: endpoints anyone may call
OPEN_ENDPOINTS = frozenset(
    {
        "health.healthz",
        "health.readyz",
        "fhir_read.metadata",
        "auth_api.smart_configuration",
        "auth_api.smart_configuration_fhir",
        "auth_api.token",
        # the internal API's description and its docs page: no data, like /fhir/metadata
        "sessions_api.openapi",
        "api_docs.page",
        "api_docs.asset",
    }
)
#: endpoints audited whoever calls them (they show PHI to the clinic's own staff)
AUDITED_ENDPOINTS = frozenset({"deliveries_api.delivery_payload", "bulk_export.export_file"})
#: the clinic's own API: for the clinic's systems and admins only
CLINIC_PREFIX = "/api/v1/"
DEV_PRINCIPAL = Principal("dev-open-access", "admin", None, tuple(parse_scopes("system/*.cruds")))
#: ``/metrics`` only: the caller presented FHIR_BRIDGE_METRICS_TOKEN (a Prometheus scraper)
METRICS_ENDPOINT = "metrics.metrics"
SCRAPER_PRINCIPAL = Principal("metrics-scraper", "metrics-scraper", None, ())
_SCRAPE_TOKEN_KEY = "fhir_bridge_scrape_token"
_SECRET_KEY = "fhir_bridge_token_secret"
DEFAULT_AUDIT_DIR = DEFAULT_INSTANCE_DIR / "audit"

_READ_INTERACTIONS = {
    "fhir_read.read": "read",
    "fhir_read.vread": "read",
    "fhir_read.history": "history",
    "fhir_read.search_get": "search",
    "fhir_read.search_post": "search",
    "terminology.read_code_system": "read",
    "terminology.read_concept_map": "read",
    "terminology.search_code_systems": "search",
    "terminology.search_concept_maps": "search",
    "terminology.translate_any": "operation",
    "terminology.translate_one": "operation",
    "fhir_write.create": "create",
    "fhir_write.update": "update",
}
#: operations on a fixed type
_OPERATIONS = {
    "operations.patient_everything": "Patient",
    "operations.service_request_documentation": "ServiceRequest",
}


@auth_api.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART discovery at the server root."""
    return _json(authorization.smart_configuration(runtime()))


@auth_api.get("/fhir/.well-known/smart-configuration")
def smart_configuration_fhir() -> Response:
    """SMART discovery at the FHIR base, where SMART clients look for it."""
    return _json(authorization.smart_configuration(runtime()))


@auth_api.post("/auth/token")
def token() -> Response:
    """``client_credentials`` with a private_key_jwt assertion (SMART Backend Services)."""
    rt = runtime()
    if request.mimetype != "application/x-www-form-urlencoded":
        exc = authorization.OAuthError(
            "invalid_request", "The token request must be application/x-www-form-urlencoded"
        )
        return _oauth_error(exc)
    try:
        grant = authorization.exchange_assertion(rt, request.form, secret=signing_secret())
    except authorization.OAuthError as exc:
        g.audit_token = {"client_id": exc.client_id, "outcome": "refused", "reason": exc.error}
        return _oauth_error(exc)
    g.audit_token = {"client_id": grant.client.client_id, "outcome": "issued", "reason": ""}
    return _json(authorization.token_response(grant), headers={"Pragma": "no-cache"})


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = current_app.json.response(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _oauth_error(exc: authorization.OAuthError) -> Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    challenge = authorization.oauth_challenge(exc)
    if challenge:
        headers["WWW-Authenticate"] = challenge
    return Response(
        authorization.oauth_error_body(exc),
        status=exc.status,
        mimetype="application/json",
        headers=headers,
    )


def signing_secret() -> str:
    """The store's access-token secret, read once per app."""
    secret = current_app.extensions.get(_SECRET_KEY)
    if secret is None:
        secret = authorization.signing_secret(runtime())
        current_app.extensions[_SECRET_KEY] = secret
    return secret


def current_principal() -> Principal:
    """The caller of this request (set by the guard; never defaults to an open principal)."""
    return g.principal


def current_scope() -> MemberScope:
    """What the caller may see (fails closed: no principal, no scope): the access policy's."""
    return access_policy.read_scope(g.principal)


def _unauthorized(description: str, error_code: str = "invalid_token") -> Response:
    challenge = (
        f'Bearer realm="fhir-bridge", error="{error_code}", error_description="{description}"'
    )
    if error_code == "":
        challenge = 'Bearer realm="fhir-bridge"'
    outcome = operation_outcome([error("login", description, "http.Authorization")])
    return fhir_response(outcome, 401, {"WWW-Authenticate": challenge})


def _forbidden(description: str) -> Response:
    outcome = operation_outcome([Issue("error", "forbidden", description, ("http.Authorization",))])
    return fhir_response(outcome, 403)


def _bearer() -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _requested_types() -> Iterator[tuple[str, str]]:
    """(resource type, interaction) pairs the request needs, from its route and body."""
    endpoint = request.endpoint or ""
    args = request.view_args or {}
    if endpoint.startswith("terminology."):
        kind = "CodeSystem" if "code_system" in endpoint else "ConceptMap"
        yield kind, _READ_INTERACTIONS[endpoint]
    elif endpoint in _OPERATIONS:
        yield _OPERATIONS[endpoint], "read"
    elif endpoint in _READ_INTERACTIONS:
        yield args.get("resource_type", ""), _READ_INTERACTIONS[endpoint]
    elif endpoint == "fhir_write.bundle":
        body = request.get_json(silent=True, force=True)
        entries = body.get("entry") if isinstance(body, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            req = entry.get("request") if isinstance(entry, dict) else None
            rtype = res.get("resourceType") if isinstance(res, dict) else None
            method = req.get("method") if isinstance(req, dict) else None
            if isinstance(rtype, str):
                yield rtype, "update" if method == "PUT" else "create"


class _RateLimiter:
    """Requests per client per minute, in this process (fixed one-minute windows)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def retry_after(self, client_id: str) -> int:
        """0 when the request may go ahead, else seconds until the next window."""
        if self.per_minute <= 0:
            return 0
        now = time.time()
        window = int(now // 60)
        with self._lock:
            start, count = self._windows.get(client_id, (window, 0))
            if start != window:
                start, count = window, 0
            count += 1
            self._windows[client_id] = (start, count)
        return 0 if count <= self.per_minute else max(1, int(60 - now % 60))


def guard() -> Response | None:
    """Authenticate and authorize the request (a Flask before_request hook)."""
    if request.blueprint == "console":
        return None  # the clinic console authenticates with its own session login
    if request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
        return None  # unknown URLs get their 404 from routing
    rt = runtime()
    token = _bearer()
    if token is None and current_app.extensions["fhir_bridge_dev_open_access"]:
        g.principal = DEV_PRINCIPAL
        return None
    if token is None:
        return _unauthorized("A bearer access token is required", "")
    if not token:
        return _unauthorized(
            "The Authorization header must use the Bearer scheme", "invalid_request"
        )
    if request.endpoint == METRICS_ENDPOINT and _is_scrape_token(token):
        g.principal = SCRAPER_PRINCIPAL
        return None
    try:
        g.principal = authorization.authenticate(
            rt,
            token,
            secret=signing_secret(),
            verified=current_app.extensions["fhir_bridge_verified_tokens"],
        )
    except TokenInvalid as exc:
        return _unauthorized(exc.reason)
    limiter: _RateLimiter = current_app.extensions["fhir_bridge_rate_limiter"]
    wait = limiter.retry_after(g.principal.client_id)
    if wait:
        outcome = operation_outcome(
            [error("throttled", "Too many requests from this client; retry later", "http")]
        )
        return fhir_response(outcome, 429, {"Retry-After": str(wait)})
    return _authorize(g.principal)


def _is_scrape_token(token: str) -> bool:
    """Is ``token`` the configured metrics token? (compared in constant time)"""
    expected: str | None = current_app.extensions.get(_SCRAPE_TOKEN_KEY)
    return expected is not None and hmac.compare_digest(token.encode(), expected.encode())


def _authorize(principal: Principal) -> Response | None:
    if request.path.startswith(CLINIC_PREFIX):
        if not access_policy.may_use_clinic_api(principal):
            return _forbidden("The clinic API is open to the clinic's own systems only")
        return None
    for resource_type, interaction in _requested_types():
        if resource_type == "AuditEvent" and principal.role != "admin":
            return _forbidden("AuditEvent is open to clinic administrators only")
        if not principal.may(resource_type, interaction):
            return _forbidden(f"The token's scopes do not allow {interaction} on {resource_type}")
    return None


def _audit(response: Response) -> Response:
    """Queue an AuditEvent for an external client's request; written after the response is sent."""
    token_audit = g.get("audit_token")
    principal: Principal | None = g.get("principal")
    if principal is SCRAPER_PRINCIPAL:
        return response  # metrics hold no PHI: a scrape every few seconds is not audited
    refused = response.status_code in (401, 403, 429)
    external = principal is not None and principal.member_scoped
    phi_view = request.endpoint in AUDITED_ENDPOINTS
    if token_audit is None and not external and not phi_view and not (refused and request.endpoint):
        return response
    now = authorization.utcnow()
    address = request.remote_addr
    trail: AuditTrail = current_app.extensions["fhir_bridge_audit"]
    if token_audit is not None:
        event = token_event(**token_audit, address=address, recorded=now)
        response.call_on_close(lambda: trail.record(event))
        return response
    args = request.view_args or {}
    types = list(_requested_types())
    if request.endpoint == "fhir_write.bundle":
        rtype, interaction = None, "transaction"
    elif types:
        rtype, interaction = types[0]
    else:
        rtype, interaction = args.get("resource_type"), "operation"
    resources, patients, operation, written = disclosure.collected()
    if written:
        rtype, _, written_id = written.partition("/")
    access = Access(
        client_id=principal.client_id if principal else "",
        role=principal.role if principal else "",
        organization=principal.organization if principal else None,
        interaction="operation" if operation else interaction,
        resource_type=rtype or args.get("resource_type"),
        resource_id=written_id if written else args.get("resource_id"),
        query=request.path if phi_view else request.query_string.decode("latin-1") or None,
        status=response.status_code,
        address=address,
        recorded=now,
        operation=operation,
    )
    rt = runtime()

    def record() -> None:
        """After the response: name every patient it disclosed, then spool the event."""
        named = patients | audit.patients_disclosed(rt, resources)
        trail.record(access_event(replace(access, patients=tuple(sorted(named)))))

    response.call_on_close(record)
    return response


def _audit_trail(app: Flask, settings: Settings) -> AuditTrail:
    """Spool under FHIR_BRIDGE_AUDIT_SPOOL_DIR; tests get a folder of their own and no thread."""
    if settings.testing:
        spool = Path(tempfile.mkdtemp(prefix="fhir-bridge-audit-"))
    else:
        spool = Path(settings.audit_spool_dir) if settings.audit_spool_dir else DEFAULT_AUDIT_DIR
    trail = AuditTrail(app.extensions["fhir_bridge"], spool, background=not settings.testing)
    if not settings.testing:
        atexit.register(trail.close)
    return trail


def init_app(app: Flask, settings: Settings) -> None:
    """Register the discovery and token endpoints, guard every other request, audit access."""
    app.extensions["fhir_bridge_audit"] = _audit_trail(app, settings)
    app.after_request(_audit)
    app.extensions["fhir_bridge_rate_limiter"] = _RateLimiter(settings.rate_limit_per_minute)
    app.extensions["fhir_bridge_dev_open_access"] = settings.dev_open_access
    app.extensions[_SCRAPE_TOKEN_KEY] = settings.scrape_token()
    app.extensions["fhir_bridge_verified_tokens"] = authorization.VerifiedTokens()
    app.register_blueprint(auth_api)
    app.before_request(guard)
