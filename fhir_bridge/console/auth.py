"""Logging in and out, who the current staff user is, and who may open which page.

The session cookie holds the username, the user's ``session_epoch`` (a password reset or a
disable ends every session), the login time (sessions end after
``FHIR_BRIDGE_CONSOLE_SESSION_HOURS``) and the last use (idle timeout,
``FHIR_BRIDGE_CONSOLE_IDLE_MINUTES``). Every request re-reads the user, so a disabled user is
out at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError

from fhir_bridge.api.http import runtime
from fhir_bridge.console import console
from fhir_bridge.console.audit import record_login
from fhir_bridge.console.setup import csrf
from fhir_bridge.security.principal import Principal
from fhir_bridge.security.scopes import parse_scopes
from fhir_bridge.services import staff_users

F = TypeVar("F", bound=Callable[..., Any])
ROLE_LABELS = {"front-desk": "Front desk", "therapist": "Therapist", "clinic-admin": "Clinic admin"}
#: pages open without a login
PUBLIC_ENDPOINTS = frozenset({"console.login", "console.static"})
_SCOPES = tuple(parse_scopes("system/*.cruds"))
#: the idle clock is written back at most this often (the cookie is re-sent only then)
_SEEN_GRANULARITY_SECONDS = 30


@dataclass(frozen=True)
class Staff:
    """The logged-in staff user, as the pages need them."""

    username: str
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        """Clinic admins also see partners, clients, payloads and the audit log."""
        return self.role == "clinic-admin"

    @property
    def role_label(self) -> str:
        """The role as people say it."""
        return ROLE_LABELS.get(self.role, self.role)

    def principal(self) -> Principal:
        """The API principal the user acts as: audit records name ``user:<username>``."""
        return Principal(f"user:{self.username}", staff_users.STAFF_ROLES[self.role], None, _SCOPES)


def current_staff() -> Staff:
    """The logged-in user (the before_request hook guarantees one on non-public pages)."""
    return g.staff


def _settings() -> Any:
    return current_app.extensions["fhir_bridge_console_settings"]


def _end(reason: str) -> Response:
    session.clear()
    if reason:
        flash(reason, "info")
    return redirect(url_for("console.login"))


@console.before_request
def _load_staff() -> Response | None:
    """Find the user of the session, end stale sessions, check CSRF on every form post."""
    if request.method == "POST":
        csrf.protect()  # CSRFError (400) when the token is missing or wrong
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    username = session.get("u")
    if not username:
        return redirect(url_for("console.login"))
    now = time.time()
    settings = _settings()
    if now - float(session.get("seen", 0)) > settings.console_idle_minutes * 60:
        return _end(f"Your session ended after {settings.console_idle_minutes} minutes unused.")
    if now - float(session.get("t0", 0)) > settings.console_session_hours * 3600:
        return _end("Your session has ended; please log in again.")
    user = staff_users.get_user(runtime(), username)
    if user is None or not user.enabled or user.session_epoch != session.get("e"):
        return _end("Your session has ended; please log in again.")
    if now - float(session["seen"]) > _SEEN_GRANULARITY_SECONDS:
        session["seen"] = now
    g.staff = Staff(user.username, user.display_name, user.role)
    g.principal = g.staff.principal()  # the API's refusal audit names the user too
    return None


def requires_admin(view: F) -> F:
    """Open the page to clinic admins only; others get the 403 page."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_staff().is_admin:
            return render_template("forbidden.html"), 403
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@console.app_context_processor
def _globals() -> dict[str, Any]:
    return {"staff": g.get("staff")}


@console.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return render_template("error.html", title="Form expired", message=exc.description), 400


@console.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; a good password starts a fresh session."""
    if request.method == "GET":
        return render_template("login.html")
    username = request.form.get("username", "").strip().lower()[:64]
    password = request.form.get("password", "")[:256]
    result = staff_users.authenticate(runtime(), username, password)
    record_login(username, result.user is not None, result.refusal)
    if result.user is None:
        message = (
            "Too many failed attempts: this account is locked for "
            f"{staff_users.LOCK_MINUTES} minutes. A clinic admin can reset the password."
            if result.refusal == "locked"
            else "Wrong username or password."
        )
        return render_template("login.html", error=message, username=username), 401
    session.clear()  # a new session (and a new CSRF token) for the new login
    now = time.time()
    session.update({"u": result.user.username, "e": result.user.session_epoch, "t0": now})
    session["seen"] = now
    return redirect(url_for("console.today"))


@console.post("/logout")
def logout() -> Response:
    """End the session."""
    return _end("You are logged out.")
