"""Every delivery attempt is kept: a successful retry does not erase the failure before it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from fhir_bridge.cli import main
from fhir_bridge.services.runtime import Runtime
from tests.api.test_worker import Clock, _deliveries, _partner, _row, _worker
from tests.support.fhir_peer import FhirPeer, fhir_peer


@pytest.fixture
def peer() -> Iterator[FhirPeer]:
    with fhir_peer() as p:
        yield p


def test_a_failure_then_a_success_both_stay_in_the_history(
    runtime: Runtime, peer: FhirPeer, client
) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    clock = Clock()
    worker = _worker(runtime, clock, backoff_base=10, backoff_cap=3600)
    peer.outage, peer.retry_after = True, "30"
    assert worker.run_once() == 1
    clock.now = _row(runtime, pk).next_attempt_at
    peer.outage = False
    assert worker.run_once() == 1

    shown = client.get(f"/api/v1/deliveries/{pk}").get_json()
    assert (shown["status"], shown["attempts"], shown["last_error"]) == ("delivered", 2, None)
    failed, delivered = shown["history"]
    assert (failed["result"], failed["status"]) == ("retry", 503)
    assert failed["error"] == "partner answered HTTP 503"
    assert failed["outcome"] == peer.outcome(503)
    assert failed["worker"] == "w1"
    assert failed["at"] == "2026-12-01T09:00:00.000Z"
    assert failed["duration_ms"] >= 0
    assert (delivered["result"], delivered["status"], delivered["error"]) == (
        "delivered",
        200,
        None,
    )
    assert delivered["outcome"] is None
    assert delivered["at"] > failed["at"]


def test_a_dead_letter_and_its_retry_keep_every_attempt(
    runtime: Runtime, peer: FhirPeer, client
) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    clock = Clock()
    worker = _worker(runtime, clock)
    peer.status_override = 422
    worker.run_once()
    assert client.post(f"/api/v1/deliveries/{pk}/retry").status_code == 200  # due now
    clock.now = datetime.now(UTC).replace(tzinfo=None)
    peer.status_override = None
    assert worker.run_once() == 1
    history = client.get(f"/api/v1/deliveries/{pk}").get_json()["history"]
    assert [(h["result"], h["status"]) for h in history] == [("dead", 422), ("delivered", 200)]
    assert history[0]["outcome"]["resourceType"] == "OperationOutcome"


def test_the_list_does_not_carry_the_history(runtime: Runtime, peer: FhirPeer, client) -> None:
    _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    _worker(runtime, Clock()).run_once()
    [listed] = client.get("/api/v1/deliveries").get_json()["deliveries"]
    assert "history" not in listed


def _cli(database_url: str, *args: str):
    env = {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_the_cli_lists_deliveries_and_shows_one_with_its_attempts(
    runtime: Runtime, peer: FhirPeer, database_url: str
) -> None:
    partner = _partner(runtime, "p1", peer.base)
    first, second = _deliveries(runtime, partner, ["pat-1", "pat-2"])
    clock = Clock()
    worker = _worker(runtime, clock, backoff_base=10, backoff_cap=3600)
    peer.outage = True
    worker.run_once()  # the first fails; the partner's second row is given back unsent
    peer.outage = False
    clock.advance(hours=1)
    worker.run_once()

    shown = _cli(database_url, "deliveries", "show", str(first))
    assert shown.exit_code == 0
    view = json.loads(shown.output)
    assert [(h["result"], h["status"]) for h in view["history"]] == [
        ("retry", 503),
        ("delivered", 200),
    ]
    assert "payload" not in view

    listed = _cli(database_url, "deliveries", "list", "--partner", "p1", "--json")
    assert [json.loads(line)["id"] for line in listed.output.splitlines()] == [second, first]
    table = _cli(database_url, "deliveries", "list", "--status", "delivered", "--patient", "pat-2")
    assert table.output.splitlines()[0].split()[:4] == ["id", "partner", "event_type", "status"]
    assert [line.split()[0] for line in table.output.splitlines()[1:]] == [str(second)]
    assert _cli(database_url, "deliveries", "list", "--partner", "nobody").output == (
        "no deliveries\n"
    )
    bad = _cli(database_url, "deliveries", "list", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since" in bad.output
    missing = _cli(database_url, "deliveries", "show", "999999")
    assert missing.exit_code == 1
    assert "no delivery 999999" in missing.output


def test_send_lines_name_the_partner_and_the_delivery(
    runtime: Runtime, peer: FhirPeer, caplog
) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    with caplog.at_level(logging.INFO, logger="fhir_bridge.exchange.sender"):
        _worker(runtime, Clock()).run_once()
    [sent] = [r for r in caplog.records if r.getMessage() == "bundle sent"]
    assert (sent.partner, sent.delivery, sent.worker) == ("p1", pk, "w1")
    assert (sent.outcome, sent.status) == ("delivered", 200)
