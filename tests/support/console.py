"""Helpers for console tests: staff users, logging in, CSRF tokens, sample data via the API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fhir_bridge.fhir import jsonio
from fhir_bridge.services import staff_users
from fhir_bridge.services.loading import load_bundle

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
PASSWORDS = {
    "admin": "correct horse battery",
    "desk": "front desk password 1",
    "therapist": "therapist password 1",
}
ROLES = {"admin": "clinic-admin", "desk": "front-desk", "therapist": "therapist"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_staff(runtime: Any) -> None:
    """An admin, a front-desk and a therapist user."""
    for name, role in ROLES.items():
        staff_users.add_user(
            runtime,
            username=name,
            display_name=f"{name.title()} User",
            role=role,
            password=PASSWORDS[name],
        )


def csrf_token(client: Any, path: str = "/login") -> str:
    """The CSRF token a page's forms carry for this client's session."""
    page = client.get(path)
    found = _CSRF.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1)


def login(client: Any, username: str, password: str | None = None) -> Any:
    """Log in through the form; returns the response."""
    token = csrf_token(client)
    return client.post(
        "/login",
        data={
            "username": username,
            "password": PASSWORDS.get(username, "") if password is None else password,
            "csrf_token": token,
        },
    )


def post_form(client: Any, path: str, data: dict[str, str], *, page: str = "/") -> Any:
    """POST a console form with the session's CSRF token."""
    return client.post(path, data={**data, "csrf_token": csrf_token(client, page)})


def seed(client: Any, runtime: Any) -> None:
    """Directory data, then sample referrals and visits through the API (as an EHR would)."""
    for path in sorted(SAMPLES.glob("*.json")):
        load_bundle(runtime, jsonio.loads(path.read_bytes()))
    for name in ("whiplash-transaction.json", "lymphedema-servicerequest.json"):
        body = (SAMPLES / "referrals" / name).read_bytes()
        target = "/fhir" if b'"Bundle"' in body[:300] else "/fhir/ServiceRequest"
        resp = client.post(target, data=body, content_type="application/fhir+json")
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
    for path in sorted((SAMPLES / "sessions").glob("*.json")):
        resp = client.post(
            "/api/v1/sessions", data=path.read_bytes(), content_type="application/json"
        )
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)


def dead_letter(runtime: Any) -> int:
    """A physician partner that refused a visit: one delivery, dead with the partner's 400."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from fhir_bridge.outbox import routing
    from fhir_bridge.services import partners
    from fhir_bridge.store.db import write_session
    from fhir_bridge.store.models import Delivery

    spec = partners.PartnerSpec(
        key="northside",
        name="Northside Family Medicine",
        kind="physician",
        base_url="https://ehr.northside.example.org/fhir",
        auth_kind="none",
        identifiers=["http://hl7.org/fhir/sid/us-npi|1407071236"],
    )
    partners.add_partner(runtime, partners.validate(spec))
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=5)
    assert routing.route_pending(runtime, now=later) > 0
    with write_session(runtime.sessions) as session:
        visit_first = (Delivery.event_type == "session.documented").desc()
        pk = session.scalar(select(Delivery.pk).order_by(visit_first, Delivery.pk.desc()).limit(1))
        session.execute(
            update(Delivery)
            .where(Delivery.pk == pk)
            .values(
                status="dead",
                attempts=1,
                last_status=400,
                last_error="partner refused the Bundle: Procedure.performer is required",
                last_attempt_at=later,
                first_failed_at=later,
            )
        )
    return pk


def follow_up_visits(client: Any) -> None:
    """Two more weekly visits of the tension-headache patient (pain 4 -> 2, then 3 -> 1)."""
    base = jsonio.loads((SAMPLES / "sessions" / "tension-headache.json").read_bytes())
    for n, (day, pre, post, sleep) in enumerate(
        (("2026-12-02", 4, 2, 55.1), ("2026-12-09", 3, 1, 51.7)), start=11
    ):
        record = {
            **base,
            "session_id": f"MMC-2026-0002{n}",
            "started_at": f"{day}T08:00:00-05:00",
            "ended_at": f"{day}T08:45:00-05:00",
            "assessments": [
                {"phase": "pre", "measure": "pain_nrs", "value": pre, "body_site": "head"},
                {"phase": "post", "measure": "pain_nrs", "value": post, "body_site": "head"},
                {"phase": "pre", "measure": "promis_sleep_disturbance_t", "value": sleep},
            ],
        }
        resp = client.post("/api/v1/sessions", json=record)
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
