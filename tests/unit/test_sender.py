"""send_bundle against a mocked partner (responses): every classification branch."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest
import requests
import responses

from fhir_bridge.exchange.auth import NoAuth
from fhir_bridge.exchange.sender import MAX_OUTCOME_BYTES, send_bundle, send_parts

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


def _batch_response(*statuses: str, outcome: dict | None = None) -> str:
    entries: list[dict] = [{"response": {"status": s}} for s in statuses]
    for entry in entries:  # the outcome of each failed entry
        if outcome is not None and not entry["response"]["status"].startswith("2"):
            entry["response"]["outcome"] = outcome
    return json.dumps({"resourceType": "Bundle", "type": "batch-response", "entry": entries})


@responses.activate
@pytest.mark.parametrize(
    ("statuses", "outcome", "status", "error"),
    [
        (("201 Created", "200 OK", "200"), "delivered", 200, None),
        (("201 Created", "412 Precondition Failed"), "dead", 412, "batch entry 2 (HTTP 412)"),
        (("200 OK", "400"), "dead", 400, "batch entry 2 (HTTP 400)"),
        (("503 Service Unavailable", "200 OK"), "retry", 503, "batch entry 1 (HTTP 503)"),
        (("429", "200 OK"), "retry", 429, "batch entry 1 (HTTP 429)"),
    ],
)
def test_a_batch_is_delivered_only_when_every_entry_succeeded(statuses, outcome, status, error):
    failing = None if outcome == "delivered" else OUTCOME
    responses.post(BASE, status=200, body=_batch_response(*statuses, outcome=failing))
    result = send_bundle(
        BASE, BUNDLE, auth=NoAuth(), session=requests.Session(), timeout=5, bundle_type="batch"
    )
    assert (result.outcome, result.status) == (outcome, status)
    if error is None:
        assert result.error is None
        assert result.outcome_body is None
    else:
        assert error in result.error
        assert json.loads(result.outcome_body) == OUTCOME  # the failed entry's outcome


@responses.activate
@pytest.mark.parametrize("body", ["", "not json", json.dumps({"resourceType": "Bundle"})])
def test_a_batch_answered_without_a_batch_response_is_not_delivered(body):
    responses.post(BASE, status=200, body=body)
    result = send_bundle(
        BASE, BUNDLE, auth=NoAuth(), session=requests.Session(), timeout=5, bundle_type="batch"
    )
    assert result.outcome == "dead"
    assert "batch-response" in result.error


@responses.activate
def test_a_transaction_answer_is_not_read_entry_by_entry():
    responses.post(BASE, status=200, body=_batch_response("412"))
    assert _send().delivered


@responses.activate
def test_parts_are_sent_in_order_and_stop_at_the_first_failure():
    responses.post(BASE, status=200, body="{}")
    responses.post(BASE, status=422, json=OUTCOME)
    responses.post(BASE, status=200, body="{}")
    parts = [b"part-1", b"part-2", b"part-3"]
    result = send_parts(
        BASE,
        parts,
        bundle_type="transaction",
        auth=NoAuth(),
        session=requests.Session(),
        timeout=5,
        now=NOW,
    )
    assert [c.request.body for c in responses.calls] == parts[:2]
    assert (result.outcome, result.status) == ("dead", 422)
    assert result.error.startswith("part 2 of 3: ")
    assert json.loads(result.outcome_body) == OUTCOME


@responses.activate
def test_every_part_delivered_is_a_delivery():
    responses.post(BASE, status=200, body="{}")
    result = send_parts(
        BASE,
        [b"a", b"b"],
        bundle_type="transaction",
        auth=NoAuth(),
        session=requests.Session(),
        timeout=5,
    )
    assert (result.outcome, result.status, result.error) == ("delivered", 200, None)
    assert len(responses.calls) == 2
