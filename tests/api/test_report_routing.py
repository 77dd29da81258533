"""A filed report is routed to the referring physician by default, to a payer only when its
partner entry asks for ``report.generated``, with a conditional Bundle (both databases)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fhir.resources.R4B.bundle import Bundle

from fhir_bridge.outbox.routing import route_pending
from fhir_bridge.services.partner_spec import DEFAULT_EVENTS
from tests.api.test_referrals import on_file  # noqa: F401
from tests.api.test_routing import (
    NPI,
    REQUESTER,
    _deliveries,
    _errors,
    _partner,
    _payload,
    flow,  # noqa: F401
)

REPORT_SYSTEM = "https://clinic.example.org/fhir/report"


@pytest.fixture
def settings(settings):
    """A progress report after every visit."""
    return replace(settings, report_every_visits=1)


def test_the_physician_gets_the_report_and_a_payer_only_when_it_asks(runtime, flow):  # noqa: F811
    payer_id = {"system": runtime.settings.payer_id_system, "value": "ACME-HEALTH"}
    physician = _partner(
        runtime,
        "ehr",
        identifiers=[{"system": NPI, "value": REQUESTER}],
        events=DEFAULT_EVENTS["physician"],
    )
    default_payer = _partner(
        runtime, "payer", kind="payer", identifiers=[payer_id], events=DEFAULT_EVENTS["payer"]
    )
    asking_payer = _partner(
        runtime,
        "payer-reports",
        kind="payer",
        identifiers=[payer_id],
        events=("session.documented", "report.generated"),
    )
    route_pending(runtime)
    got = {
        pk: [d.event_type for d in _deliveries(runtime, pk)]
        for pk in (physician, default_payer, asking_payer)
    }
    assert "report.generated" in got[physician]
    assert got[default_payer] == ["session.documented"]
    assert got[asking_payer] == ["session.documented", "report.generated"]

    [row] = [d for d in _deliveries(runtime, physician) if d.event_type == "report.generated"]
    bundle = _payload(runtime, row)
    Bundle.model_validate(bundle)
    patient, document = bundle["entry"]
    assert patient["request"]["method"] == "POST"
    assert patient["request"]["ifNoneExist"].startswith("identifier=")
    sr = flow["service_request"]
    assert document["request"] == {
        "method": "PUT",
        "url": f"DocumentReference?identifier={REPORT_SYSTEM}|{sr}/progress",
    }
    body = document["resource"]
    assert "id" not in body
    assert body["subject"] == {"reference": patient["fullUrl"]}
    assert _errors(body) == []
    assert body["context"]["related"][0]["identifier"]["value"] == "SR-8891"
