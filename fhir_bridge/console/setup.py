"""Wiring the console into the app: cookie settings, CSRF, security headers, the blueprint."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

from fhir_bridge.services import staff_users
from fhir_bridge.settings import Settings

#: no inline script or style anywhere; nothing from another origin
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
csrf = CSRFProtect()


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with its secret read from the store on first use.

    Every process of one store signs with the same secret (``signing_key`` row
    ``console-session``), so any gunicorn worker accepts any worker's cookie.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """A session for console pages only: API requests never read the cookie or the store."""
        if not _console_request(app, request):
            return None  # Flask uses a null session
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> Any:
        """Load the secret lazily: create_app never touches the database."""
        if not app.secret_key:
            app.secret_key = staff_users.console_secret(app.extensions["fhir_bridge"])
        return super().get_signing_serializer(app)


def _console_request(app: Flask, request: Request) -> bool:
    """Does the URL route to the console? (Sessions open before Flask matches the route.)"""
    adapter = app.create_url_adapter(request)
    if adapter is None:
        return False
    try:
        endpoint, _ = adapter.match()
    except HTTPException:
        return False
    return str(endpoint).startswith("console.")


def _secure_cookies(settings: Settings) -> bool:
    """Secure cookies unless the console runs over plain http for tests or development."""
    if settings.testing or settings.dev_open_access:
        return settings.public_base_url.startswith("https://")
    return True


def init_app(app: Flask, settings: Settings) -> None:
    """Configure sessions and CSRF for the console and register its blueprint."""
    from fhir_bridge.console import console

    secure = _secure_cookies(settings)
    app.session_interface = ConsoleSessionInterface()
    app.config.update(
        # __Host- cookies must be Secure, path /, no Domain: no subdomain can overwrite them
        SESSION_COOKIE_NAME="__Host-console" if secure else "console",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.console_session_hours),
        SESSION_REFRESH_EACH_REQUEST=False,
        # CSRF is checked by the console's own before_request, never on the bearer-token API
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=settings.console_session_hours * 3600,
        WTF_CSRF_SSL_STRICT=secure,
    )
    csrf.init_app(app)
    app.extensions["fhir_bridge_console_settings"] = settings
    app.register_blueprint(console)

    @app.after_request
    def _headers(response: Response) -> Response:
        if request.blueprint == "console":
            # a view may set its own policy (the standalone HTML report: views_reports)
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["X-Frame-Options"] = "DENY"
            # same-origin: Flask-WTF checks the Referer on https; no path leaves the site
            response.headers["Referrer-Policy"] = "same-origin"
            response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
            if not (request.endpoint or "").endswith(".static"):
                response.headers["Cache-Control"] = "no-store"
        return response
