"""A clinic-sized store for the console benchmark: patients, visits, referrals, deliveries.

Deterministic (seeded). Per patient: a Patient with a clinic MRN, a referral ServiceRequest
and its inbox row, a Goal, and per visit a ``clinic_session`` row (a valid session record)
with a pain score before and after treatment as Observations. FHIR resources go through
``ResourceStore.bulk_create`` (indexed as usual); the session, referral, outbox and delivery
rows are inserted directly, as their own repositories would have written them.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import write_session
from fhir_bridge.store.models import (
    ClinicSession,
    Delivery,
    InboundPayload,
    OutboxEvent,
    Partner,
    Referral,
)
from fhir_bridge.store.repository import ResourceStore

ROOT = Path(__file__).resolve().parents[1]
MRN = "https://clinic.example.org/fhir/mrn"
MEASURE = "http://fhir-bridge.org/fhir/CodeSystem/massage-measure"
PHASE = "http://fhir-bridge.org/fhir/StructureDefinition/assessment-phase"
FAMILIES = [
    "Smith", "Johnson", "Garcia", "Nguyen", "Okafor", "Lindqvist", "Moreau", "Kowalski",
    "Haddad", "Tanaka", "Ferreira", "Brooks", "Rivera", "Kim", "Novak", "Schmidt", "Dubois",
    "Rossi", "Yilmaz", "Andersen",
]  # fmt: skip
GIVEN = ["Ana", "Ben", "Chloe", "Dev", "Eva", "Farid", "Grace", "Hugo", "Iris", "Jon"]
START = datetime(2026, 1, 5, 15, 0)


def patient_id(i: int) -> str:
    """``bpat-000123``."""
    return f"bpat-{i:06d}"


def family(i: int) -> str:
    """The patient's family name (20 names, so a search finds ~5% of patients)."""
    return FAMILIES[i % len(FAMILIES)]


def _pain(i: int, v: int, phase: str, value: int, at: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"bobs-{i:06d}-{v:02d}-{phase}",
        "extension": [{"url": PHASE, "valueCode": phase}],
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "72514-3"},
                {"system": MEASURE, "code": "pain_nrs"},
            ],
            "text": "Pain, 0-10 numeric rating scale",
        },
        "subject": {"reference": f"Patient/{patient_id(i)}"},
        "effectiveDateTime": at.isoformat() + "Z",
        "valueQuantity": {"value": value, "unit": "score", "system": "http://unitsofmeasure.org",
                          "code": "{score}"},
    }  # fmt: skip


def patient_resources(i: int, visits: int) -> list[dict[str, Any]]:
    """Patient, ServiceRequest, Goal and two pain Observations per visit."""
    rng = random.Random(i)
    pid = patient_id(i)
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": MRN, "value": f"B-{i:06d}"}],
            "name": [{"family": family(i), "given": [GIVEN[(i // 20) % len(GIVEN)]]}],
            "birthDate": f"{1950 + i % 50}-0{1 + i % 9}-1{i % 10}",
            "gender": "female" if i % 2 else "male",
        },
        {
            "resourceType": "ServiceRequest",
            "id": f"bsr-{i:06d}",
            "status": "active",
            "intent": "order",
            "code": {"text": "Medical massage"},
            "subject": {"reference": f"Patient/{pid}"},
        },
        {
            "resourceType": "Goal",
            "id": f"bgoal-{i:06d}",
            "lifecycleStatus": "active",
            "description": {"text": "Pain no worse than 2/10"},
            "subject": {"reference": f"Patient/{pid}"},
            "target": [
                {
                    "measure": {"coding": [{"system": MEASURE, "code": "pain_nrs"}]},
                    "detailQuantity": {"value": 2},
                }
            ],
        },
    ]
    pain = rng.randint(6, 9)
    for v in range(visits):
        at = START + timedelta(days=7 * v + i % 200)
        out.append(_pain(i, v, "pre", pain, at))
        out.append(_pain(i, v, "post", max(pain - 2, 0), at + timedelta(minutes=50)))
        pain = max(pain - rng.randint(0, 1), 1)
    return out


def _record(i: int, v: int, template: dict[str, Any]) -> bytes:
    at = START + timedelta(days=7 * v + i % 200)
    rec = {
        **template,
        "session_id": f"BS-{i:06d}-{v:02d}",
        "patient": {**template["patient"], "mrn": f"B-{i:06d}", "family_name": family(i)},
        "started_at": at.isoformat() + "Z",
        "ended_at": (at + timedelta(hours=1)).isoformat() + "Z",
    }
    rec.pop("notes", None)
    for a in rec.get("assessments", []):
        a.pop("at", None)
    return json.dumps(rec).encode()


def load(runtime: Runtime, patients: int, visits_per_patient: int, *, batch: int = 200) -> None:
    """Fill an empty, migrated store."""
    template = json.loads((ROOT / "sample_bundles/sessions/chronic-low-back-pain.json").read_text())
    now = datetime.now(UTC).replace(tzinfo=None)
    with write_session(runtime.sessions) as session:
        payload_pk = session.scalar(
            insert(InboundPayload).returning(InboundPayload.pk),
            [{"received_at": now, "channel": "bench", "method": "POST", "path": "/bench",
              "sha256": "0" * 64, "body": b"{}"}],
        )  # fmt: skip
        partner_pk = session.scalar(
            insert(Partner).returning(Partner.pk),
            [{"key": "northside", "name": "Northside Family Medicine", "kind": "physician",
              "base_url": "https://ehr.example.org/fhir", "events": "[]", "identifiers": "[]",
              "auth_kind": "none", "auth": "{}", "enabled": True, "created_at": now,
              "updated_at": now}],
        )  # fmt: skip
    for start in range(0, patients, batch):
        ids = range(start, min(start + batch, patients))
        resources = [r for i in ids for r in patient_resources(i, visits_per_patient)]
        with write_session(runtime.sessions) as session:
            ResourceStore(session).bulk_create(resources)
            session.execute(insert(ClinicSession), [
                {"session_id": f"BS-{i:06d}-{v:02d}", "status": "completed",
                 "patient_mrn": f"B-{i:06d}",
                 "started_at": START + timedelta(days=7 * v + i % 200),
                 "received_at": now - timedelta(days=visits_per_patient - v),
                 "updated_at": now - timedelta(days=visits_per_patient - v, hours=i % 24),
                 "inbound_payload_pk": payload_pk, "record": _record(i, v, template),
                 "resources": json.dumps(
                     [{"resourceType": "Patient", "id": patient_id(i), "versionId": 1},
                      {"resourceType": "Observation", "id": f"bobs-{i:06d}-{v:02d}-pre",
                       "versionId": 1}]),
                 "flags": "[]"}
                for i in ids for v in range(visits_per_patient)
            ])  # fmt: skip
            statuses = ["requested"] + ["in-progress"] * 12 + ["completed"] * 7
            session.execute(insert(Referral), [
                {"service_request_id": f"bsr-{i:06d}", "task_id": f"btask-{i:06d}",
                 "placer_system": "urn:bench", "placer_value": f"R-{i:06d}",
                 "status": statuses[i % 20], "patient_id": patient_id(i),
                 "patient_match": "identifier", "requester_reference": None,
                 "requester_npi": "1407071236", "authored_on": now,
                 "visits_prescribed": 12, "frequency": "1 per week",
                 "expires_on": date.today() + timedelta(days=i % 120),
                 "visits_used": min(visits_per_patient, 12), "warnings": "[]",
                 "received_at": now - timedelta(days=i % 90), "updated_at": now}
                for i in ids
            ])  # fmt: skip
            events = session.scalars(
                insert(OutboxEvent).returning(OutboxEvent.pk, sort_by_parameter_order=True),
                [{"created_at": now, "event_type": "session.documented",
                  "resource_type": "Procedure", "resource_id": f"bproc-{i:06d}-{v:02d}",
                  "version_id": 1, "patient_id": patient_id(i), "detail": "{}"}
                 for i in ids for v in range(2)],
            ).all()  # fmt: skip
            rows = []
            for n, pk in enumerate(events):
                k = start * 2 + n
                status = "dead" if k % 100 == 0 else "pending" if k % 50 == 1 else "delivered"
                failed = status != "delivered"
                rows.append(
                    {"partner_pk": partner_pk, "outbox_pk": pk, "event_type": "session.documented",
                     "patient_id": patient_id(start + n // 2), "status": status,
                     "attempts": 3 if failed else 1, "next_attempt_at": now,
                     "last_attempt_at": now, "first_failed_at": now if failed else None,
                     "last_status": 503 if failed else 200,
                     "last_error": "HTTP 503 from partner" if failed else None,
                     "created_at": now, "delivered_at": None if failed else now}
                )  # fmt: skip
            session.execute(insert(Delivery), rows)
