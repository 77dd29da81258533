"""What staff do in the console reaches the same services as the API, and pages show it."""

from __future__ import annotations

import base64
import json
import re

import pytest

from tests.support.console import add_staff, dead_letter, login, post_form, seed


@pytest.fixture
def seeded(client, runtime):
    add_staff(runtime)
    seed(client, runtime)
    return client.get("/api/v1/referrals").get_json()["referrals"]


def test_accepting_and_declining_go_through_the_referral_service(client, seeded):
    login(client, "desk")
    first, second = seeded[0]["id"], seeded[1]["id"]
    page = client.get(f"/referrals/{first}").get_data(as_text=True)
    assert "Accept referral" in page
    assert "Reason for declining" in page
    resp = post_form(client, f"/referrals/{first}/accept", {}, page=f"/referrals/{first}")
    assert resp.status_code == 302
    assert client.get(f"/api/v1/referrals/{first}").get_json()["status"] == "accepted"
    assert "Referral accepted." in client.get(f"/referrals/{first}").get_data(as_text=True)
    # a decline needs a reason: the service's 422 is shown, nothing changes
    post_form(client, f"/referrals/{second}/decline", {"reason": " "}, page="/referrals")
    shown = client.get(f"/referrals/{second}").get_data(as_text=True)
    assert "needs a reason" in shown
    assert client.get(f"/api/v1/referrals/{second}").get_json()["status"] == "requested"
    post_form(client, f"/referrals/{second}/decline", {"reason": "Needs PT"}, page="/referrals")
    task = client.get(f"/api/v1/referrals/{second}").get_json()
    assert task["status"] == "rejected"
    # an action the state does not allow: the 409's message, not a crash
    post_form(client, f"/referrals/{second}/accept", {}, page="/referrals")
    assert "cannot be accepted" in client.get(f"/referrals/{second}").get_data(as_text=True)


def test_today_lists_new_referrals_todays_visits_and_failing_deliveries(client, runtime, seeded):
    pk = dead_letter(runtime)
    login(client, "therapist")
    html = client.get("/").get_data(as_text=True)
    assert html.count("/referrals/") >= len(seeded)
    assert "/visits/MMC-2026-000203" in html
    assert f"/deliveries/{pk}" in html
    assert "Procedure.performer is required" in html


def test_a_dead_letter_is_resent_from_its_page(client, runtime, seeded):
    pk = dead_letter(runtime)
    login(client, "desk")
    page = client.get(f"/deliveries/{pk}").get_data(as_text=True)
    assert "HTTP 400" in page
    assert "Resend" in page
    assert "View the payload" not in page  # admins only
    assert "No attempt recorded yet" in page  # made without the worker: no attempt rows
    post_form(client, f"/deliveries/{pk}/resend", {}, page=f"/deliveries/{pk}")
    assert client.get(f"/api/v1/deliveries/{pk}").get_json()["status"] == "pending"


def test_resend_all_dead_letters(client, runtime, seeded):
    pk = dead_letter(runtime)
    login(client, "admin")
    resp = post_form(client, "/deliveries/resend-dead", {"partner": "northside"})
    assert resp.status_code == 302
    assert client.get(f"/api/v1/deliveries/{pk}").get_json()["status"] == "pending"


def test_the_patient_page_charts_each_measure_with_its_goal(client, seeded):
    visit = client.get("/api/v1/sessions/MMC-2026-000202").get_json()
    patient = next(r["id"] for r in visit["resources"] if r["resourceType"] == "Patient")
    login(client, "therapist")
    html = client.get(f"/patients/{patient}").get_data(as_text=True)
    assert html.count("<svg") >= 1
    assert 'class="goal"' in html  # the goal line of a measure with a target
    assert "/visits/MMC-2026-000202" in html


def test_the_visit_page_shows_billing_flags_resources_and_the_record(client, seeded):
    login(client, "therapist")
    html = client.get("/visits/MMC-2026-000203").get_data(as_text=True)
    assert "Billing units" in html
    assert "97124" in html or "97140" in html
    assert "Procedure/" in html
    assert "Observation/" in html
    assert "MMC-2026-000203" in html
    assert client.get("/visits/no-such-visit").status_code == 404


def test_an_admin_registers_a_smart_client_with_a_generated_key(client, runtime, seeded):
    login(client, "admin")
    resp = post_form(
        client,
        "/clients/new",
        {
            "client_id": "acme-review",
            "name": "Acme Health claims review",
            "role": "payer",
            "organization": "Organization/org-payer-acme-health",
            "keys": "generate",
        },
        page="/clients/new",
    )
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "BEGIN PRIVATE KEY" in html
    shown = re.search(r'id="jwks-out">(.*?)</pre>', html, re.S).group(1)
    jwks = json.loads(shown.replace("&#34;", '"'))
    assert jwks["keys"][0]["alg"] == "ES384"
    assert "d" not in jwks["keys"][0]
    listed = client.get("/partners").get_data(as_text=True)
    assert "acme-review" in listed
    # a bad registration names the problem
    resp = post_form(
        client, "/clients/new", {"client_id": "x", "role": "payer", "keys": "generate"}
    )
    assert resp.status_code == 422
    assert "CLIENT_ID" in resp.get_data(as_text=True)


def test_an_admin_sees_and_audits_a_payload(client, runtime, seeded):
    pk = dead_letter(runtime)
    login(client, "admin")
    resp = client.get(f"/deliveries/{pk}/payload")
    assert resp.status_code == 200
    events = client.get("/fhir/AuditEvent", query_string={"_count": "200"}).get_json()
    queries = [
        e["resource"].get("entity", [{}])[0].get("query", "") for e in events.get("entry", [])
    ]
    assert f"/api/v1/deliveries/{pk}/payload" in [
        base64.b64decode(q).decode() for q in queries if q
    ]


def test_the_audit_log_filters_by_user(client, seeded):
    login(client, "therapist")
    client.get("/referrals")
    login(client, "admin")
    html = post_form(client, "/audit", {"client": "user:therapist"}, page="/audit").get_data(
        as_text=True
    )
    assert "user:therapist" in html
    assert "user:admin" not in html.split("audit-events", 1)[1]


def test_payer_requests_show_each_cdex_task_and_its_answer(app, runtime):
    from tests.api.test_cdex import data_request, payer, post_task
    from tests.api.test_documentation import build_reviewed

    app, _, org = build_reviewed(runtime, app)
    add_staff(runtime)
    query = data_request("query", {"valueString": "Observation?code=http://loinc.org|72514-3"})
    assert post_task(app, payer(app, org), query).status_code == 201
    client = app.test_client()
    login(client, "admin")
    html = client.get("/payer-requests").get_data(as_text=True)
    assert "Observation?code=http://loinc.org|72514-3" in html
    assert "completed" in html
    login(client, "desk")
    assert client.get("/payer-requests").status_code == 403


def test_an_admin_tests_a_partners_connection(client, runtime, seeded):
    import responses

    dead_letter(runtime)  # registers partner "northside"
    login(client, "admin")
    metadata = "https://ehr.northside.example.org/fhir/metadata"
    with responses.RequestsMock() as mock:
        mock.get(
            metadata,
            json={
                "resourceType": "CapabilityStatement",
                "fhirVersion": "4.0.1",
                "software": {"name": "Northside EHR"},
            },
        )
        post_form(client, "/partners/northside/test", {}, page="/partners")
        shown = client.get("/partners").get_data(as_text=True)
        assert "northside: Connected: FHIR 4.0.1, Northside EHR" in shown
        mock.replace(responses.GET, metadata, status=503)
        post_form(client, "/partners/northside/test", {}, page="/partners")
        assert "answered HTTP 503" in client.get("/partners").get_data(as_text=True)
    assert post_form(client, "/partners/nobody/test", {}, page="/partners").status_code == 404


def failed_then_delivered(runtime) -> int:
    """A delivery the partner refused with a 503 and its OperationOutcome, then accepted; the
    worker's attempts as recorded (as in tests/api/test_delivery_history.py)."""
    from tests.api.test_worker import Clock, _deliveries, _partner, _row, _worker
    from tests.support.fhir_peer import fhir_peer

    with fhir_peer() as peer:
        (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
        clock = Clock()
        worker = _worker(runtime, clock, backoff_base=10, backoff_cap=3600)
        peer.outage, peer.retry_after = True, "30"
        assert worker.run_once() == 1
        clock.now = _row(runtime, pk).next_attempt_at
        peer.outage = False
        assert worker.run_once() == 1
    return pk


def _rows(html: str, table_id: str) -> list[str]:
    body = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S)
    assert body, f"no table {table_id}"
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)) for r in body.group(1).split("</tr>")][
        :-1
    ]


def test_the_delivery_page_lists_every_attempt_oldest_first(client, runtime):
    add_staff(runtime)
    pk = failed_then_delivered(runtime)
    login(client, "desk")
    html = client.get(f"/deliveries/{pk}").get_data(as_text=True)
    failed, delivered = _rows(html, "attempts")
    assert "2026-12-01 09:00:00.000 UTC" in failed
    assert "retry" in failed
    assert " 503 " in failed
    assert "partner answered HTTP 503" in failed
    assert "error invalid: peer 503" in failed  # the partner's OperationOutcome, summarised
    assert "delivered" in delivered
    assert " 200 " in delivered
    assert " ms " in failed
    assert " ms " in delivered
    assert '<th scope="col">HTTP status</th>' in html
    assert "2 attempt(s), oldest first" in html


def _report_links(html: str) -> list[str]:
    return sorted(set(re.findall(r'href="(/referrals/[^"]+/report/[^"]+)"', html)))


@pytest.mark.parametrize("user", ["desk", "therapist"])
def test_the_patient_page_offers_each_referrals_reports(client, runtime, seeded, user):
    chosen = next(r for r in seeded if r["patient"])
    referral, patient = chosen["id"], chosen["patient"].removeprefix("Patient/")
    login(client, user)
    links = _report_links(client.get(f"/patients/{patient}").get_data(as_text=True))
    assert [link for link in links if f"/{referral}/" in link] == [
        f"/referrals/{referral}/report/{kind}.{fmt}"
        for kind in ("discharge", "progress")
        for fmt in ("html", "pdf")
    ]
    for link in links:
        assert "?" not in link  # ids only: no PHI, no query string
    pdf = client.get(f"/referrals/{referral}/report/discharge.pdf")
    assert pdf.status_code == 200
    assert pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF")
    assert pdf.headers["Content-Disposition"] == (
        f'attachment; filename="discharge-report-{referral}.pdf"'
    )
    assert pdf.headers["Cache-Control"] == "no-store"
    page = client.get(f"/referrals/{referral}/report/progress.html")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Progress report" in html
    assert "<script" not in html
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # default-src 'none': no script at all
    assert page.headers["X-Frame-Options"] == "DENY"
    # each view is audited, naming the staff user, for the referral and its patient
    for entity in (f"ServiceRequest/{referral}", f"Patient/{patient}"):
        events = client.get("/fhir/AuditEvent", query_string={"entity": entity}).get_json()
        agents = [
            e["resource"]["agent"][0]["who"]["identifier"]["value"] for e in events.get("entry", [])
        ]
        assert agents.count(f"user:{user}") >= 2, entity


def test_reports_need_a_login_and_a_known_referral(app, client, runtime, seeded):
    referral = seeded[0]["id"]
    anonymous = app.test_client()
    for fmt in ("pdf", "html"):
        resp = anonymous.get(f"/referrals/{referral}/report/progress.{fmt}")
        assert resp.status_code == 302
        assert resp.headers["Location"].endswith("/login")
    login(client, "admin")
    assert client.get("/referrals/no-such-referral/report/progress.pdf").status_code == 404
    assert client.get(f"/referrals/{referral}/report/other.pdf").status_code == 404
    assert client.get(f"/referrals/{referral}/report/progress.docx").status_code == 404
