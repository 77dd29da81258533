"""A live bridge on a local port and Debian's Chromium driven by selenium.

The browser is ``/usr/bin/chromium`` with ``/usr/bin/chromedriver`` (apt packages ``chromium``
and ``chromium-driver``; ``.ci/run`` installs them). Selenium Manager is never asked to find or
download anything: both paths are given and ``SE_OFFLINE`` is set. Without Chromium the tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from fhir_bridge.app import create_app
from fhir_bridge.services.runtime import Runtime, build_runtime
from fhir_bridge.settings import Settings
from tests.conftest import _empty_tables, provision_database

CHROMIUM = Path(os.environ.get("FHIR_BRIDGE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FHIR_BRIDGE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("FHIR_BRIDGE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
DESKTOP = (1280, 800)
PHONE = (390, 844)


def _require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the browser tests cannot run: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated SQLite database for the browser tests (the pages are database-neutral;
    the Flask-client console tests cover PostgreSQL)."""
    with provision_database("sqlite", tmp_path_factory) as url:
        yield url


class LiveServer:
    """The app served by werkzeug on 127.0.0.1 in a thread; its base URL is its own address."""

    def __init__(self, database_url: str) -> None:
        self._server = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        settings = Settings(
            database_url=database_url,
            public_base_url=self.url,
            testing=True,
            log_json=False,
            rate_limit_per_minute=0,
        )
        self.runtime: Runtime = build_runtime(settings)
        _empty_tables(self.runtime)
        self.app = create_app(runtime=self.runtime)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _dispatch(self, environ: dict, start_response: object) -> object:
        return self.app(environ, start_response)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self.runtime.dispose()


@pytest.fixture
def live(browser_database: str) -> Iterator[LiveServer]:
    """A fresh store behind a live server."""
    server = LiveServer(browser_database)
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium, fresh profile, nothing fetched from the network by the browser."""
    _require_chromium()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download drivers or browsers
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fhir-bridge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (FHIR_BRIDGE_TEST_ARTIFACTS, default test-artifacts/browser)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
