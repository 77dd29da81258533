"""While the database cannot be reached, the API and the token endpoint answer 503 with
``Retry-After`` and a ``transient`` OperationOutcome, not 500; nothing is logged but types."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from fhir_bridge.app import create_app
from fhir_bridge.settings import Settings

#: nothing listens on port 1: every connection is refused at once
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/fhir_bridge?connect_timeout=2"
SAMPLE = Path(__file__).resolve().parents[2] / "sample_bundles/sessions/whiplash-neck-pain.json"
#: what the sample visit says about its patient and therapist (PHI)
PHI = ("P-1001", "Rivera", "Lucia", "1234567893", "Sam Lee")


@pytest.fixture
def down_app() -> Iterator[Flask]:
    settings = Settings(
        database_url=UNREACHABLE,
        public_base_url="http://bridge.test",
        testing=True,
        log_json=False,
        dev_open_access=True,
    )
    app = create_app(settings)
    yield app
    app.extensions["fhir_bridge"].dispose()


def _assert_transient(resp) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.headers["Retry-After"] == "5"
    assert resp.mimetype == "application/fhir+json"
    [issue] = resp.get_json()["issue"]
    assert (issue["severity"], issue["code"]) == ("error", "transient")


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Patient/pat-rivera-ana",
        "/fhir/Patient?identifier=https://clinic.example.org/fhir/mrn|P-SECRET-77",
        "/api/v1/sessions/MMC-DOWN-1",
        "/api/v1/deliveries",
    ],
)
def test_reads_answer_503_transient(down_app, path):
    _assert_transient(down_app.test_client().get(path, headers={"Authorization": None}))


def test_the_token_endpoint_answers_503(down_app):
    resp = down_app.test_client().post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": "a.b.c",
        },
        headers={"Authorization": None},
    )
    _assert_transient(resp)


def test_a_visit_answers_503_and_the_log_holds_none_of_it(down_app, caplog):
    with caplog.at_level(logging.DEBUG):
        resp = down_app.test_client().post(
            "/api/v1/sessions",
            data=SAMPLE.read_bytes(),
            content_type="application/json",
            headers={"Authorization": None},
        )
    _assert_transient(resp)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "database unavailable" in logged
    assert [p for p in PHI if p in logged] == []
