"""Staff flows through the console in a real Chromium against a live bridge."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.pages import submit_and_wait, text, ui_login, wait_for
from tests.support.console import SAMPLES, add_staff, dead_letter, seed
from tests.support.tokens import bearer


@pytest.fixture
def seeded(live):
    add_staff(live.runtime)
    seed(live.app.test_client(), live.runtime)
    return live


def test_login_then_accept_a_new_referral(seeded, browser):
    ui_login(browser, seeded.url, "desk")
    assert "Desk User" in text(browser)
    submit_and_wait(browser, browser.find_element(By.LINK_TEXT, "Referrals"))
    Select(wait_for(browser, "#status")).select_by_value("requested")
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    submit_and_wait(browser, wait_for(browser, "table tbody a"))
    submit_and_wait(browser, wait_for(browser, "#accept"))
    assert "Referral accepted." in wait_for(browser, ".flash-ok").text
    referral_id = browser.current_url.rsplit("/", 1)[1]
    api = seeded.app.test_client().get(f"/api/v1/referrals/{referral_id}").get_json()
    assert api["status"] == "accepted"
    assert not browser.find_elements(By.ID, "accept")  # no second accept offered


def test_a_visit_documented_through_the_api_appears_with_its_chart(seeded, browser):
    ui_login(browser, seeded.url, "therapist")
    record = json.loads((SAMPLES / "sessions" / "chronic-low-back-pain.json").read_text())
    record["session_id"] = "MMC-2026-000299"
    record["started_at"], record["ended_at"] = (
        "2026-11-19T17:30:00-08:00",
        "2026-11-19T18:30:00-08:00",
    )
    for a in record["assessments"]:
        a.pop("at", None)
        if a["measure"] == "pain_nrs":
            a["value"] = 3 if a["phase"] == "pre" else 2
    resp = requests.post(
        f"{seeded.url}/api/v1/sessions",
        json=record,
        headers=bearer(seeded.app, role="clinic"),
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    browser.get(seeded.url + "/")
    submit_and_wait(browser, wait_for(browser, "a[href='/visits/MMC-2026-000299']"))
    assert "Billing units" in text(browser)
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "p.meta a"))  # the patient
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    assert charts
    pain = next(
        c for c in browser.find_elements(By.CSS_SELECTOR, "figure.chart") if "Pain" in c.text
    )
    # two visits now: the pre-treatment line has two points (6 then 3)
    assert len(pain.find_elements(By.CSS_SELECTOR, "circle.dot-pre")) == 2
    assert "6 -> 3" in pain.find_element(By.TAG_NAME, "desc").get_attribute("textContent")


def test_a_failing_delivery_is_seen_and_resent(seeded, browser):
    pk = dead_letter(seeded.runtime)
    ui_login(browser, seeded.url, "desk")
    assert "Procedure.performer is required" in text(browser)
    submit_and_wait(browser, wait_for(browser, f"a[href='/deliveries/{pk}']"))
    assert "HTTP 400" in text(browser)
    submit_and_wait(browser, wait_for(browser, "#resend"))
    assert "queued again" in wait_for(browser, ".flash-ok").text
    assert "pending" in browser.find_element(By.CSS_SELECTOR, "h1 .badge").text
    api = seeded.app.test_client().get(f"/api/v1/deliveries/{pk}").get_json()
    assert api["status"] == "pending"


def test_register_a_payer_client_and_find_its_accesses_in_the_audit_log(seeded, browser):
    ui_login(browser, seeded.url, "admin")
    submit_and_wait(browser, browser.find_element(By.LINK_TEXT, "Partners & clients"))
    submit_and_wait(browser, browser.find_element(By.LINK_TEXT, "Register a client"))
    wait_for(browser, "#client_id").send_keys("acme-review")
    browser.find_element(By.ID, "name").send_keys("Acme Health claims review")
    Select(browser.find_element(By.ID, "role")).select_by_value("payer")
    browser.find_element(By.ID, "organization").send_keys("Organization/org-payer-acme-health")
    submit_and_wait(browser, browser.find_element(By.ID, "register-client"))
    pem = wait_for(browser, "#private-key").text
    jwks = json.loads(browser.find_element(By.ID, "jwks-out").text)
    token_url = f"{seeded.url}/auth/token"

    # the payer's system logs in with the key it was handed (SMART Backend Services)
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": "acme-review",
            "sub": "acme-review",
            "aud": token_url,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        },
        pem,
        algorithm="ES384",
        headers={"kid": jwks["keys"][0]["kid"]},
    )
    grant = requests.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs system/Coverage.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        timeout=30,
    )
    assert grant.status_code == 200, grant.text
    token = grant.json()["access_token"]
    search = requests.get(
        f"{seeded.url}/fhir/Patient",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert search.status_code == 200

    submit_and_wait(browser, browser.find_element(By.LINK_TEXT, "Audit log"))
    wait_for(browser, "#client").send_keys("acme-review")
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    rows = wait_for(browser, "#audit-events").text
    assert "acme-review" in rows
    assert "login" in rows  # the token request (DICOM 110122 Login)
    assert "search-type" in rows  # the Patient search
