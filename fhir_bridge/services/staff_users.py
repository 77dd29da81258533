"""Staff accounts of the clinic console: registration, passwords (argon2id) and login checks.

Passwords are hashed with argon2-cffi's ``PasswordHasher`` (argon2id, its RFC 9106 low-memory
defaults) and rehashed on login when those parameters change. After ``MAX_FAILURES`` wrong
passwords in a row an account is locked for ``LOCK_MINUTES``; a correct password does not
open a locked account. An unknown username costs the same hash as a known one, so timing does
not tell which usernames exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.staff_users import StaffUserExists, StaffUserRow, StaffUserStore

#: console roles and the API role (``security.principal.ROLES``) each one acts as
STAFF_ROLES = {"front-desk": "clinic", "therapist": "clinic", "clinic-admin": "admin"}
MAX_FAILURES = 5
LOCK_MINUTES = 15
MIN_PASSWORD_LENGTH = 12
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_hasher = PasswordHasher()
#: verified against when the username is unknown, so both paths cost one argon2 hash
_DUMMY_HASH = _hasher.hash("not a password anyone has")

__all__ = ["STAFF_ROLES", "StaffUserExists", "StaffUserRow"]


class UserSpecError(ValueError):
    """A username, role or password that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class LoginResult:
    """``user`` when the login succeeded; else why not (``bad-credentials`` or ``locked``)."""

    user: StaffUserRow | None
    refusal: str = ""


def utcnow() -> datetime:
    """Naive UTC, as the store keeps times."""
    return datetime.now(UTC).replace(tzinfo=None)


def check_password_rules(password: str) -> None:
    """At least MIN_PASSWORD_LENGTH characters (NIST SP 800-63B favours length over rules)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserSpecError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 256:
        raise UserSpecError("a password has at most 256 characters")


def add_user(
    runtime: Runtime, *, username: str, display_name: str, role: str, password: str
) -> StaffUserRow:
    """Register a staff user (UserSpecError, StaffUserExists)."""
    if not _USERNAME.match(username):
        raise UserSpecError("username: 2-64 lower-case letters, digits, . _ - (a letter first)")
    if role not in STAFF_ROLES:
        raise UserSpecError(f"role: one of {', '.join(STAFF_ROLES)}")
    if not display_name.strip():
        raise UserSpecError("name: required")
    check_password_rules(password)
    hashed = _hasher.hash(password)
    with write_session(runtime.sessions) as session:
        return StaffUserStore(session).add(
            username=username,
            display_name=display_name.strip(),
            role=role,
            password_hash=hashed,
            now=utcnow(),
        )


def list_users(runtime: Runtime) -> list[StaffUserRow]:
    """Every staff user."""
    with read_session(runtime.sessions) as session:
        return StaffUserStore(session).list()


def get_user(runtime: Runtime, username: str) -> StaffUserRow | None:
    """One staff user, or None."""
    with read_session(runtime.sessions) as session:
        return StaffUserStore(session).get(username)


def set_enabled(runtime: Runtime, username: str, enabled: bool) -> bool:
    """Enable or disable a user (ends their sessions); False when unknown."""
    with write_session(runtime.sessions) as session:
        return StaffUserStore(session).set_enabled(username, enabled, now=utcnow())


def reset_password(runtime: Runtime, username: str, password: str) -> bool:
    """Set a new password, unlock, end open sessions; False when unknown (UserSpecError)."""
    check_password_rules(password)
    hashed = _hasher.hash(password)
    with write_session(runtime.sessions) as session:
        return StaffUserStore(session).set_password(username, hashed, now=utcnow())


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def authenticate(
    runtime: Runtime, username: str, password: str, *, now: datetime | None = None
) -> LoginResult:
    """Check a login; counts failures and locks the account after MAX_FAILURES in a row."""
    now = now or utcnow()
    with read_session(runtime.sessions) as session:
        user = StaffUserStore(session).get(username)
    if user is None or not user.enabled:
        _verify(_DUMMY_HASH, password)
        return LoginResult(None, "bad-credentials")
    if user.locked_until is not None and user.locked_until > now:
        _verify(_DUMMY_HASH, password)
        return LoginResult(None, "locked")
    ok = _verify(user.password_hash, password)
    with write_session(runtime.sessions) as session:
        store = StaffUserStore(session)
        if not ok:
            # read again under the write lock: concurrent failures all count
            current = store.get(username, for_update=True)
            failures = (current.failed_logins if current else 0) + 1
            lock = now + timedelta(minutes=LOCK_MINUTES) if failures >= MAX_FAILURES else None
            store.record_failure(username, lock_until=lock, now=now)
            return LoginResult(None, "locked" if lock else "bad-credentials")
        rehash = _hasher.hash(password) if _hasher.check_needs_rehash(user.password_hash) else None
        store.record_success(username, password_hash=rehash, now=now)
    return LoginResult(user)


def console_secret(runtime: Runtime) -> str:
    """The secret the console signs its cookies and CSRF tokens with (made on first use)."""
    with write_session(runtime.sessions) as session:
        return StaffUserStore(session).console_secret(now=utcnow())
