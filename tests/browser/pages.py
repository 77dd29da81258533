"""Driving the console in Chromium: log in, screenshots at two widths, the axe-core scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import DESKTOP, PHONE
from tests.support.console import PASSWORDS

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
#: axe impacts that fail the tests
BLOCKING = ("serious", "critical")


def wait_for(driver: Any, css: str, timeout: float = 10) -> Any:
    """The first element matching ``css`` once it is there."""
    return WebDriverWait(driver, timeout).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def ui_login(driver: Any, base: str, username: str) -> None:
    """Log in through the form, as a person would (typing, then Enter)."""
    driver.get(f"{base}/login")
    wait_for(driver, "#username").send_keys(username)
    password = driver.find_element(By.ID, "password")
    password.send_keys(PASSWORDS[username])
    password.submit()
    wait_for(driver, "nav[aria-label=Main]")


def text(driver: Any) -> str:
    """The page's visible text."""
    return driver.find_element(By.TAG_NAME, "body").text


def screenshot(driver: Any, folder: Path, name: str) -> list[Path]:
    """The whole page at desktop and phone width (``<name>-desktop.png``, ``-phone.png``).

    The viewport is emulated (Chromium's DevTools ``Emulation.setDeviceMetricsOverride``): the
    phone is a 390 px wide mobile viewport, and the height grows to the page's full length.
    """
    saved = []
    for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        metrics = {
            "width": width,
            "height": height,
            "deviceScaleFactor": 1,
            "mobile": label == "phone",
        }
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        full = driver.execute_script("return document.documentElement.scrollHeight")
        metrics["height"] = max(height, min(int(full), 6000))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        path = folder / f"{name}-{label}.png"
        driver.save_screenshot(str(path))
        saved.append(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return saved


def axe_violations(driver: Any) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the current page (WCAG 2.x A/AA rules)."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    violations = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag",
                 values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}})
           .then(r => done(r.violations)).catch(e => done([{id: "axe-error",
                 impact: "critical", help: String(e), nodes: []}]));
        """
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n.get("target") for n in v.get("nodes", [])][:5],
        }
        for v in violations
        if v.get("impact") in BLOCKING
    ]


def describe(found: dict[str, list[dict[str, Any]]]) -> str:
    """Violations per page, readable in a failure message."""
    return json.dumps({page: v for page, v in found.items() if v}, indent=2)


def _gone(old: Any) -> Any:
    """True once ``old`` has left the document. ChromeDriver sometimes reports a node of the
    page being replaced as "does not belong to the document" (a plain WebDriverException)
    rather than as stale: that also means it is gone."""

    def predicate(_driver: Any) -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return predicate


def submit_and_wait(driver: Any, button: Any, timeout: float = 15) -> None:
    """Click a button that loads a new page, and wait until the old page is gone."""
    old = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, timeout).until(_gone(old))
