"""Access tokens for tests, minted with the app's signing secret as the token endpoint does."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.exc import SQLAlchemyError

from fhir_bridge.api.security import signing_secret
from fhir_bridge.security.tokens import issue_access_token
from fhir_bridge.services.authorization import utcnow


def bearer(
    app: Flask,
    *,
    role: str = "admin",
    organization: str | None = None,
    scope: str = "system/*.cruds",
    client_id: str | None = None,
) -> dict[str, str]:
    """An ``Authorization`` header for a client of ``role``."""
    with app.app_context():
        secret = signing_secret()
    settings = app.extensions["fhir_bridge"].settings
    token = issue_access_token(
        secret,
        issuer=settings.public_base_url.rstrip("/"),
        audience=settings.fhir_base_url,
        client_id=client_id or f"test-{role}",
        role=role,
        organization=organization,
        scope=scope,
        now=utcnow(),
    )
    return {"Authorization": f"Bearer {token.access_token}"}


class AdminClient(FlaskClient):
    """The test client: requests without an Authorization header go as the clinic's admin."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        """Add an admin bearer token unless the test set its own Authorization header."""
        headers = dict(kwargs.pop("headers", None) or {})
        if "Authorization" not in headers:
            # on an unmigrated database only the open endpoints can answer anyway
            with suppress(SQLAlchemyError):
                headers.update(bearer(self.application))
        elif headers["Authorization"] is None:
            del headers["Authorization"]  # the test wants no header at all
        kwargs["headers"] = headers
        # buffered, as a WSGI server does: the response is closed, so call_on_close work runs
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)
