"""The internal API's docs page in Chromium: Swagger UI runs under the page's CSP (no inline
script) on the bridge's own OpenAPI document, screenshotted and axe-scanned."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.pages import axe_violations, describe, screenshot, wait_for


def test_the_docs_page_renders_every_operation_and_is_accessible(live, browser, artifacts):
    browser.get(f"{live.url}/api/v1/docs")
    wait_for(browser, ".swagger-ui .opblock", timeout=20)
    summaries = {
        e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")
    }
    # the clinic's sessions and the operator's partners and deliveries, from openapi.json
    assert "Every registered partner" in summaries
    assert any("delivery" in s.lower() for s in summaries)
    assert browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text.strip()
    # "Authorize" offers the bearer scheme the API asks for
    browser.find_element(By.CSS_SELECTOR, ".btn.authorize").click()
    WebDriverWait(browser, 10).until(
        lambda d: "bearer" in d.find_element(By.CSS_SELECTOR, ".modal-ux").text.lower()
    )
    browser.find_element(By.CSS_SELECTOR, ".modal-ux .btn-done, .modal-ux .close-modal").click()
    screenshot(browser, artifacts, "api-docs")
    found = {"api-docs": axe_violations(browser)}
    assert not any(found.values()), describe(found)
