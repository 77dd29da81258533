"""Every console page in Chromium: screenshots at desktop and phone width, axe-core clean."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.api.test_console_pages import failed_then_delivered
from tests.browser.pages import (
    axe_violations,
    describe,
    screenshot,
    submit_and_wait,
    ui_login,
    wait_for,
)
from tests.support.console import PASSWORDS, add_staff, dead_letter, follow_up_visits, seed


@pytest.fixture
def world(live):
    """Sample data, a dead letter, an API client, and the ids the pages need."""
    add_staff(live.runtime)
    client = live.app.test_client()
    seed(client, live.runtime)
    follow_up_visits(client)
    pk = dead_letter(live.runtime)
    attempted = failed_then_delivered(live.runtime)
    referrals = client.get("/api/v1/referrals").get_json()["referrals"]
    visit = client.get("/api/v1/sessions/MMC-2026-000204").get_json()
    patient = next(r["id"] for r in visit["resources"] if r["resourceType"] == "Patient")
    # the report of the patient's own referral, if the sample links them, has visits to show
    own = [r["id"] for r in referrals if r["patient"] == f"Patient/{patient}"]
    referred = next(r["patient"] for r in referrals if r["patient"]).removeprefix("Patient/")
    return {
        "delivery": pk,
        "attempted": attempted,
        "referral": referrals[0]["id"],
        "reported": (own or [referrals[0]["id"]])[0],
        "patient": patient,
        "referred": referred,
    }


PAGES = {
    "today": "/",
    "referrals": "/referrals",
    "referral": "/referrals/{referral}",
    "patients": "/patients",
    "patient": "/patients/{patient}",
    # a patient with referrals: each with its report links
    "patient-reports": "/patients/{referred}",
    "visit": "/visits/MMC-2026-000211",
    "deliveries": "/deliveries",
    "delivery": "/deliveries/{delivery}",
    "delivery-attempts": "/deliveries/{attempted}",
    "payload": "/deliveries/{delivery}/payload",
    "partners": "/partners",
    "partner-new": "/partners/new",
    "client-new": "/clients/new",
    "payer-requests": "/payer-requests",
    "audit": "/audit",
    # the standalone report (no console layout: its own CSP, no script)
    "report": "/referrals/{reported}/report/progress.html",
}


def test_every_page_is_screenshotted_and_has_no_serious_accessibility_violation(
    live, world, browser, artifacts
):
    found: dict[str, list] = {}

    def check(name: str) -> None:
        screenshot(browser, artifacts, name)
        found[name] = axe_violations(browser)

    browser.get(f"{live.url}/login")
    wait_for(browser, "#username")
    check("login")
    ui_login(browser, live.url, "admin")
    for name, path in PAGES.items():
        browser.get(live.url + path.format(**world))
        wait_for(browser, "h1")
        check(name)
    # the report's inline <style> is allowed by its own CSP: the page is laid out as designed
    browser.get(live.url + PAGES["report"].format(**world))
    font = browser.execute_script("return getComputedStyle(document.body).fontFamily")
    assert "Helvetica" in font
    # the search results and a registered client's handover page
    browser.get(f"{live.url}/patients")
    wait_for(browser, "#q").send_keys("Lindqvist")
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    wait_for(browser, "table tbody a")
    check("patients-found")
    browser.get(f"{live.url}/clients/new")
    wait_for(browser, "#client_id").send_keys("acme-review")
    browser.find_element(By.ID, "name").send_keys("Acme Health claims review")
    browser.find_element(By.ID, "organization").send_keys("Organization/org-payer-acme-health")
    submit_and_wait(browser, browser.find_element(By.ID, "register-client"))
    wait_for(browser, "#jwks-out")
    check("client-created")
    # what a front-desk user meets on an admin page
    browser.delete_all_cookies()
    ui_login(browser, live.url, "desk")
    browser.get(f"{live.url}/audit")
    wait_for(browser, "main h1")
    check("forbidden")
    assert not any(found.values()), describe(found)
    assert len(list(artifacts.glob("*-desktop.png"))) >= len(PAGES) + 4
    assert len(list(artifacts.glob("*-phone.png"))) >= len(PAGES) + 4


def test_the_console_works_with_the_keyboard_alone(live, world, browser):
    browser.get(f"{live.url}/login")
    wait_for(browser, "#username")
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "username"  # the form has focus at once
    active.send_keys("admin\t" + PASSWORDS["admin"] + "\n")
    wait_for(browser, "nav[aria-label=Main]")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("\t")  # the first Tab reaches the skip link, which becomes visible
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content"
    assert skip.location["x"] >= 0
    outline = browser.execute_script("return getComputedStyle(arguments[0]).outlineStyle", skip)
    assert outline != "none"
