"""Staff user rows of the clinic console, as plain values, and the console's cookie secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_bridge.store.models import StaffUser
from fhir_bridge.store.signing_keys import named_secret

#: the signing_key row the console's session cookies and CSRF tokens are signed with
CONSOLE_KEY = "console-session"


@dataclass(frozen=True)
class StaffUserRow:
    """One staff user; ``password_hash`` never leaves the services that check it."""

    pk: int
    username: str
    display_name: str
    role: str
    password_hash: str
    enabled: bool
    session_epoch: int
    failed_logins: int
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime

    def public(self) -> dict[str, object]:
        """What ``users list`` prints: no hash."""
        return {
            "username": self.username,
            "name": self.display_name,
            "role": self.role,
            "enabled": self.enabled,
            "locked_until": self.locked_until.isoformat() + "Z" if self.locked_until else None,
            "last_login_at": self.last_login_at.isoformat() + "Z" if self.last_login_at else None,
        }


class StaffUserExists(Exception):
    """A user with that username is already registered."""


def _row(u: StaffUser) -> StaffUserRow:
    return StaffUserRow(
        pk=u.pk,
        username=u.username,
        display_name=u.display_name,
        role=u.role,
        password_hash=u.password_hash,
        enabled=u.enabled,
        session_epoch=u.session_epoch,
        failed_logins=u.failed_logins,
        locked_until=u.locked_until,
        last_login_at=u.last_login_at,
        created_at=u.created_at,
    )


class StaffUserStore:
    """Repository of staff users, bound to the caller's unit of work."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self, *, username: str, display_name: str, role: str, password_hash: str, now: datetime
    ) -> StaffUserRow:
        """Insert a user (StaffUserExists when the username is taken)."""
        try:
            with self.session.begin_nested():
                self.session.execute(
                    insert(StaffUser).values(
                        username=username,
                        display_name=display_name,
                        role=role,
                        password_hash=password_hash,
                        enabled=True,
                        session_epoch=1,
                        failed_logins=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise StaffUserExists(username) from None
        found = self.get(username)
        assert found is not None
        return found

    def get(self, username: str, *, for_update: bool = False) -> StaffUserRow | None:
        """The user, enabled or not."""
        stmt = select(StaffUser).where(StaffUser.username == username)
        if for_update:
            stmt = stmt.with_for_update()
        found = self.session.scalar(stmt)
        return _row(found) if found else None

    def list(self) -> list[StaffUserRow]:
        """Every user, by username."""
        stmt = select(StaffUser).order_by(StaffUser.username)
        return [_row(u) for u in self.session.scalars(stmt)]

    def _set(self, username: str, now: datetime, **values: object) -> bool:
        result = self.session.execute(
            update(StaffUser).where(StaffUser.username == username).values(updated_at=now, **values)
        )
        return bool(result.rowcount)

    def set_enabled(self, username: str, enabled: bool, *, now: datetime) -> bool:
        """Enable or disable (disabling ends the user's sessions); False when unknown."""
        return self._set(username, now, enabled=enabled, session_epoch=StaffUser.session_epoch + 1)

    def set_password(self, username: str, password_hash: str, *, now: datetime) -> bool:
        """Replace the hash, unlock, and end every open session; False when unknown."""
        return self._set(
            username,
            now,
            password_hash=password_hash,
            failed_logins=0,
            locked_until=None,
            session_epoch=StaffUser.session_epoch + 1,
        )

    def record_failure(self, username: str, *, lock_until: datetime | None, now: datetime) -> None:
        """Count a failed login; lock the account until ``lock_until`` when given."""
        values: dict[str, object] = {"failed_logins": StaffUser.failed_logins + 1}
        if lock_until is not None:
            values = {"failed_logins": 0, "locked_until": lock_until}
        self._set(username, now, **values)

    def record_success(self, username: str, *, password_hash: str | None, now: datetime) -> None:
        """Reset the failure count; store a rehashed password when the parameters changed."""
        values: dict[str, object] = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
        if password_hash is not None:
            values["password_hash"] = password_hash
        self._set(username, now, **values)

    def console_secret(self, *, now: datetime) -> str:
        """The console's cookie-signing secret, made on first use (shared by every process)."""
        return named_secret(self.session, CONSOLE_KEY, now=now)
