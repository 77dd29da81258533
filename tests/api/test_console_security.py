"""The console's doors: login, sessions, CSRF, roles, lockout, and PHI kept out of URLs and logs."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_bridge.services import staff_users
from fhir_bridge.store.db import read_session
from fhir_bridge.store.repository import ResourceStore
from tests.support.console import add_staff, csrf_token, login, post_form, seed

#: every page, with ids filled in by the ``pages`` fixture
PAGES = [
    "/",
    "/referrals",
    "/referrals/{referral}",
    "/patients",
    "/patients/{patient}",
    "/visits/MMC-2026-000203",
    "/deliveries",
    "/partners",
    "/partners/new",
    "/clients/new",
    "/payer-requests",
    "/audit",
]
ADMIN_PAGES = ["/partners", "/partners/new", "/clients/new", "/payer-requests", "/audit"]
#: query-string keys a console link may carry: filters and cursors, never PHI
ALLOWED_QUERY_KEYS = {"status", "after", "partner", "since", "before"}


@pytest.fixture
def staff(runtime):
    add_staff(runtime)


@pytest.fixture
def ids(client, runtime, staff):
    """Sample data in the store; the ids of a referral and of a documented patient."""
    seed(client, runtime)
    inbox = client.get("/api/v1/referrals").get_json()["referrals"]
    visit = client.get("/api/v1/sessions/MMC-2026-000203").get_json()
    patient = next(r["id"] for r in visit["resources"] if r["resourceType"] == "Patient")
    return {"referral": inbox[0]["id"], "patient": patient}


def pages(ids):
    return [p.format(**ids) for p in PAGES]


def test_no_page_opens_without_a_login(app, ids):
    anonymous = app.test_client()
    for path in pages(ids):
        resp = anonymous.get(path)
        assert resp.status_code == 302, path
        assert resp.headers["Location"].endswith("/login"), path
    # and no action either (a CSRF token from the login page does not make one a user)
    token = csrf_token(anonymous)
    resp = anonymous.post(f"/referrals/{ids['referral']}/accept", data={"csrf_token": token})
    assert resp.status_code == 302
    assert anonymous.get(f"/api/v1/referrals/{ids['referral']}").get_json()["status"] == "requested"


def test_every_console_route_but_login_and_css_needs_a_login(app, ids):
    anonymous = app.test_client()
    values = {**ids, "delivery_id": "1", "action": "accept", "change": "disable"}
    values |= {"kind": "progress", "fmt": "pdf"}
    values |= {"referral_id": ids["referral"], "patient_id": ids["patient"]}
    values |= {"session_id": "MMC-2026-000203", "key": "northside", "client_id": "acme"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("console.") or rule.endpoint in (
            "console.login",
            "console.static",
        ):
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = re.sub(rf"<(?:[^:>]+:)?{arg}(?:\([^)]*\))?>", values[arg], path)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            data = {"csrf_token": csrf_token(anonymous)} if method == "POST" else None
            resp = anonymous.open(path, method=method, data=data)
            assert resp.status_code == 302, (method, path, resp.status_code)
            assert resp.headers["Location"].endswith("/login")
            checked += 1
    assert checked >= 20


def test_a_good_login_opens_every_page_with_a_safe_cookie_and_headers(client, ids):
    resp = login(client, "admin")
    assert resp.status_code == 302
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    for path in pages(ids):
        page = client.get(path)
        assert page.status_code == 200, path
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        assert "unsafe-inline" not in csp
        html = page.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path  # no inline script
        assert " style=" not in html, path  # no inline style
        assert "<style" not in html, path
        assert page.headers["Cache-Control"] == "no-store"


def test_cookies_are_secure_outside_tests_and_development(app, settings):
    from dataclasses import replace

    from flask import Flask

    from fhir_bridge.console.setup import init_app

    assert app.config["SESSION_COOKIE_SECURE"] is False  # tests over http
    prod = Flask("prod")
    init_app(prod, replace(settings, testing=False))
    assert prod.config["SESSION_COOKIE_SECURE"] is True
    assert prod.config["SESSION_COOKIE_NAME"].startswith("__Host-")
    dev_https = Flask("dev")
    init_app(dev_https, replace(settings, public_base_url="https://clinic.example.org"))
    assert dev_https.config["SESSION_COOKIE_SECURE"] is True


def test_a_wrong_password_gets_no_session(client, staff):
    resp = login(client, "admin", "not the password")
    assert resp.status_code == 401
    assert "Wrong username or password" in resp.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_a_form_without_its_csrf_token_is_refused(client, ids):
    login(client, "admin")
    url = f"/referrals/{ids['referral']}/accept"
    assert client.post(url).status_code == 400
    assert client.post(url, data={"csrf_token": "forged"}).status_code == 400
    # a token of another session does not fit this one
    other = client.application.test_client()
    login(other, "desk")
    stolen = csrf_token(other, "/")
    assert client.post(url, data={"csrf_token": stolen}).status_code == 400
    assert client.get(f"/api/v1/referrals/{ids['referral']}").get_json()["status"] == "requested"
    # the login form is protected too (no login CSRF)
    fresh = client.application.test_client()
    resp = fresh.post("/login", data={"username": "admin", "password": "correct horse battery"})
    assert resp.status_code == 400


def test_front_desk_cannot_reach_admin_pages_or_payloads(client, ids):
    login(client, "desk")
    for path in ADMIN_PAGES:
        resp = client.get(path)
        assert resp.status_code == 403, path
        assert "Not for your role" in resp.get_data(as_text=True)
    assert client.get("/deliveries/1/payload").status_code == 403
    resp = post_form(client, "/clients/new", {"client_id": "sneaky", "role": "admin"})
    assert resp.status_code == 403
    # the nav does not offer them
    html = client.get("/").get_data(as_text=True)
    assert "/audit" not in html
    assert "/partners" not in html


def test_repeated_failures_lock_the_account_until_a_reset(client, runtime, staff):
    for _ in range(staff_users.MAX_FAILURES):
        login(client, "therapist", "wrong password")
    resp = login(client, "therapist")  # the right password no longer opens it
    assert resp.status_code == 401
    assert "locked" in resp.get_data(as_text=True)
    staff_users.reset_password(runtime, "therapist", "a brand new password")
    assert login(client, "therapist", "a brand new password").status_code == 302


def test_an_idle_session_ends(client, staff):
    login(client, "desk")
    assert client.get("/").status_code == 200
    with client.session_transaction() as session:
        session["seen"] = float(session["seen"]) - 31 * 60  # the app parses JSON exactly
    resp = client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/login")
    assert "unused" in client.get("/login").get_data(as_text=True)


def test_disabling_a_user_or_resetting_the_password_ends_open_sessions(client, runtime, staff):
    login(client, "desk")
    staff_users.reset_password(runtime, "desk", "another long password")
    assert client.get("/").status_code == 302
    login(client, "desk", "another long password")
    assert client.get("/").status_code == 200
    staff_users.set_enabled(runtime, "desk", False)
    assert client.get("/").status_code == 302
    assert login(client, "desk", "another long password").status_code == 401


def test_logout_ends_the_session(client, staff):
    login(client, "desk")
    assert post_form(client, "/logout", {}).status_code == 302
    assert client.get("/").status_code == 302


def _links(html: str) -> list[str]:
    return re.findall(r'(?:href|action)="([^"]+)"', html)


def test_no_phi_in_query_strings_or_logs(client, runtime, ids, caplog):
    with read_session(runtime.sessions) as session:
        patient = ResourceStore(session).read("Patient", ids["patient"]).resource
    name = patient["name"][0]["family"]
    mrn = patient["identifier"][0]["value"]
    login(client, "admin")
    caplog.set_level(logging.DEBUG)
    found = post_form(client, "/patients", {"q": name}, page="/patients")
    assert found.status_code == 200
    assert ids["patient"] in found.get_data(as_text=True)
    seen = [found.get_data(as_text=True)]
    for path in pages(ids):
        seen.append(client.get(path).get_data(as_text=True))
    for html in seen:
        for link in _links(html):
            keys = {k for k, _ in parse_qsl(urlsplit(link.replace("&amp;", "&")).query)}
            assert keys <= ALLOWED_QUERY_KEYS, link
            assert name not in link
            assert mrn not in link
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert name not in logged
    assert mrn not in logged
    # the patient forms are POSTed: the name is not in any URL the browser requests
    assert 'method="post" action="/patients"' in client.get("/patients").get_data(as_text=True)


def test_phi_views_are_audited_naming_the_staff_user(client, runtime, ids):
    login(client, "therapist")
    assert client.get(f"/patients/{ids['patient']}").status_code == 200
    events = client.get(
        "/fhir/AuditEvent", query_string={"entity": f"Patient/{ids['patient']}"}
    ).get_json()
    agents = [
        e["resource"]["agent"][0]["who"]["identifier"]["value"] for e in events.get("entry", [])
    ]
    assert "user:therapist" in agents
    logins = client.get("/fhir/AuditEvent", query_string={"subtype": "110122"}).get_json()
    assert any(
        e["resource"]["agent"][0]["altId"] == "user:therapist" for e in logins.get("entry", [])
    )


def test_the_api_never_gets_a_console_cookie(client, staff):
    login(client, "admin")
    resp = client.get("/fhir/metadata")
    assert resp.status_code == 200
    assert "Set-Cookie" not in resp.headers
    assert "Content-Security-Policy" not in resp.headers
    # a console session cookie is no credential for the API
    resp = client.get("/api/v1/referrals", headers={"Authorization": None})
    assert resp.status_code == 401


def test_odd_ids_and_cursors_are_404s_or_ignored_never_500s(client, staff):
    login(client, "admin")
    huge = "9" * 30
    assert client.get(f"/deliveries/{huge}").status_code == 404
    assert client.get(f"/deliveries/{huge}/payload").status_code == 404
    assert client.get(f"/referrals?after={huge}").status_code == 200
    assert client.get(f"/deliveries?before={huge}&since=yesterday&status=bogus").status_code == 200
    assert client.get("/referrals/no-such-referral").status_code == 404
    assert client.get("/patients/no-such-patient").status_code == 404
    resp = post_form(client, "/referrals/no-such-referral/accept", {})
    assert resp.status_code == 404
