"""A Prometheus scraper reads ``/metrics`` with FHIR_BRIDGE_METRICS_TOKEN (or ``_FILE``): a
bearer secret that opens that endpoint only, and is not audited like a client's request."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text

from fhir_bridge.app import create_app
from fhir_bridge.settings import Settings, SettingsError
from tests.support.tokens import bearer

TOKEN = "0f3c9a1e7b5d4c2a8e6f1b3d5c7a9e0f2b4d6c8a1e3f5b7d9c0a2e4f6b8d1c3a"


def _scrape(client, token: str | None):
    headers = {"Authorization": None if token is None else f"Bearer {token}"}
    return client.get("/metrics", headers=headers)


@pytest.fixture
def scraped(runtime, settings: Settings):
    """The app with a metrics token configured, and its test client."""
    app = create_app(replace(settings, metrics_token=TOKEN), runtime=runtime)
    return app, app.test_client()


def test_the_metrics_token_reads_metrics(scraped) -> None:
    _app, client = scraped
    resp = _scrape(client, TOKEN)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.content_type.startswith("text/plain; version=0.0.4")
    assert "fhir_bridge_http_request_duration_seconds" in resp.get_data(as_text=True)


def test_no_token_or_a_wrong_one_is_refused(scraped) -> None:
    app, client = scraped
    missing = _scrape(client, None)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.get_json()["issue"][0]["expression"] == ["http.Authorization"]
    wrong = _scrape(client, TOKEN[:-1] + "0")
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    # a valid client token of another role: 403, as before; an admin token still reads
    payer = bearer(app, role="payer", organization="Organization/org-payer-acme-health")
    assert client.get("/metrics", headers=payer).status_code == 403
    assert client.get("/metrics", headers=bearer(app)).status_code == 200


def test_the_metrics_token_opens_nothing_else(scraped) -> None:
    _app, client = scraped
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/fhir/Patient", headers=headers).status_code == 401
    assert client.get("/api/v1/partners", headers=headers).status_code == 401


def test_without_a_configured_token_it_is_just_a_bad_token(client) -> None:
    assert _scrape(client, TOKEN).status_code == 401


def _audit_events(runtime) -> int:
    with runtime.engine.connect() as conn:
        query = "SELECT count(*) FROM resource WHERE resource_type = 'AuditEvent'"
        return int(conn.execute(text(query)).scalar_one())


def test_scrapes_are_not_audited_refusals_are(scraped, runtime) -> None:
    _app, client = scraped
    for _ in range(3):
        assert _scrape(client, TOKEN).status_code == 200
    assert _audit_events(runtime) == 0
    assert _scrape(client, "x" * 40).status_code == 401
    assert _audit_events(runtime) == 1


def test_token_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "metrics_token"
    secret.write_text(TOKEN + "\n")
    assert Settings(metrics_token_file=str(secret)).scrape_token() == TOKEN
    assert Settings().scrape_token() is None
    with pytest.raises(SettingsError, match="FHIR_BRIDGE_METRICS_TOKEN_FILE: cannot read"):
        Settings(metrics_token_file=str(tmp_path / "missing")).scrape_token()
    secret.write_text("short")
    with pytest.raises(SettingsError, match="FHIR_BRIDGE_METRICS_TOKEN_FILE: expected at least"):
        Settings(metrics_token_file=str(secret)).scrape_token()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FHIR_BRIDGE_METRICS_TOKEN": "too-short"}, "METRICS_TOKEN: expected at least 32"),
        ({"FHIR_BRIDGE_METRICS_TOKEN": "a b" * 20}, "METRICS_TOKEN: expected at least 32"),
        (
            {"FHIR_BRIDGE_METRICS_TOKEN": TOKEN, "FHIR_BRIDGE_METRICS_TOKEN_FILE": "/run/x"},
            "set one, not both",
        ),
    ],
)
def test_bad_token_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
