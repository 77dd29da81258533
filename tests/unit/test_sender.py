"""send_bundle against a mocked partner (responses): every classification branch."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest
import requests
import responses

from fhir_bridge.exchange.auth import NoAuth
from fhir_bridge.exchange.sender import MAX_OUTCOME_BYTES, send_bundle

BASE = "https://ehr.example.org/fhir"
BUNDLE = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": []}).encode()
NOW = datetime(2026, 12, 1, 12, 0, 0)
OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Patient.birthDate bad"}],
}


class TokenAuth:
    """A PartnerAuth whose token changes on refresh; counts refreshes."""

    def __init__(self, *, can_refresh: bool = True) -> None:
        self.token = "t1"
        self.refreshes = 0
        self.can_refresh = can_refresh

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def refresh(self) -> bool:
        self.refreshes += 1
        self.token = f"t{self.refreshes + 1}"
        return self.can_refresh


class BrokenAuth:
    """A PartnerAuth whose token endpoint is down."""

    def headers(self) -> dict[str, str]:
        raise RuntimeError("token endpoint down")

    def refresh(self) -> bool:
        return False


def _send(auth=None, timeout: float = 5.0):
    return send_bundle(
        BASE,
        BUNDLE,
        auth=auth or NoAuth(),
        session=requests.Session(),
        timeout=timeout,
        now=NOW,
    )


@responses.activate
@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_delivered(status: int) -> None:
    body = "" if status == 204 else json.dumps({"resourceType": "Bundle"})
    responses.post(BASE, status=status, body=body)
    result = _send()
    assert result.outcome == "delivered"
    assert result.delivered
    assert result.status == status
    assert result.error is None
    sent = responses.calls[0].request
    assert sent.body == BUNDLE
    assert sent.headers["Content-Type"] == "application/fhir+json"
    assert sent.headers["Accept"] == "application/fhir+json"


@responses.activate
@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    responses.post(BASE, status=status, json=OUTCOME)
    result = _send()
    assert result.outcome == "retry"
    assert result.status == status
    assert result.retry_after is None
    assert json.loads(result.outcome_body or "") == OUTCOME
    assert str(status) in (result.error or "")


@responses.activate
def test_retry_after_seconds_honoured() -> None:
    responses.post(BASE, status=429, headers={"Retry-After": "120"})
    assert _send().retry_after == 120.0


@responses.activate
def test_retry_after_http_date_honoured() -> None:
    responses.post(BASE, status=503, headers={"Retry-After": "Tue, 01 Dec 2026 12:05:00 GMT"})
    assert _send().retry_after == 300.0


@responses.activate
def test_401_refresh_then_success() -> None:
    responses.post(BASE, status=401)
    responses.post(BASE, status=200)
    auth = TokenAuth()
    result = _send(auth)
    assert result.outcome == "delivered"
    assert auth.refreshes == 1
    assert [c.request.headers["Authorization"] for c in responses.calls] == [
        "Bearer t1",
        "Bearer t2",
    ]


@responses.activate
def test_401_twice_is_dead() -> None:
    responses.post(BASE, status=401, json=OUTCOME)
    auth = TokenAuth()
    result = _send(auth)
    assert result.outcome == "dead"
    assert result.status == 401
    assert auth.refreshes == 1  # one refresh, one retry, no loop
    assert len(responses.calls) == 2
    assert "credentials" in (result.error or "")


@responses.activate
def test_401_without_refresh_is_dead_at_once() -> None:
    responses.post(BASE, status=401)
    result = _send(TokenAuth(can_refresh=False))
    assert result.outcome == "dead"
    assert len(responses.calls) == 1


@responses.activate
def test_400_is_dead_with_outcome_kept() -> None:
    responses.post(BASE, status=400, json=OUTCOME)
    result = _send()
    assert result.outcome == "dead"
    assert result.status == 400
    assert json.loads(result.outcome_body or "") == OUTCOME
    assert "Patient.birthDate" not in (result.error or "")  # the error text quotes no body


@responses.activate
def test_huge_outcome_truncated_to_64_kb() -> None:
    responses.post(BASE, status=422, body="é" * MAX_OUTCOME_BYTES)
    body = _send().outcome_body or ""
    assert len(body.encode()) <= MAX_OUTCOME_BYTES
    assert len(body.encode()) >= MAX_OUTCOME_BYTES - 1


@responses.activate
def test_redirect_is_dead_not_followed() -> None:
    responses.post(BASE, status=301, headers={"Location": "https://elsewhere.example.org/"})
    result = _send()
    assert result.outcome == "dead"
    assert len(responses.calls) == 1


@responses.activate
def test_connection_error_is_retryable() -> None:
    responses.post(BASE, body=requests.ConnectionError("refused"))
    result = _send()
    assert result.outcome == "retry"
    assert result.status is None
    assert result.error == "partner unreachable (ConnectionError)"


@responses.activate
def test_timeout_is_retryable() -> None:
    responses.post(BASE, body=requests.ReadTimeout("slow"))
    result = _send()
    assert result.outcome == "retry"
    assert "timeout" in (result.error or "")


def test_no_token_is_retryable_without_request() -> None:
    with responses.RequestsMock() as mock:
        result = _send(BrokenAuth())
        assert len(mock.calls) == 0
    assert result.outcome == "retry"
    assert result.error == "no credentials for the partner (RuntimeError)"


@responses.activate
def test_logs_carry_no_body_or_headers(caplog: pytest.LogCaptureFixture) -> None:
    responses.post(BASE, status=400, json=OUTCOME)
    with caplog.at_level(logging.DEBUG, logger="fhir_bridge"):
        _send(TokenAuth())
    text = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "birthDate" not in text
    assert "Bearer" not in text
    assert "transaction" not in text
