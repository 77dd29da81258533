"""Session records for the session benchmark: the shipped samples and a synthetic generator.

``record(n)`` is the n-th synthetic record: a distinct ``session_id`` per n, one of
``PATIENTS`` patients (distinct MRNs, each with stable demographics, coverage and referral),
one of four valid NPIs, ICD-10-CM codes from a short list, and treatments, assessments and
goals drawn from the vocabulary in ``mappings/`` so that every record passes ``load_session``.
Each record comes from its own seeded RNG: the same n gives the same record in every run.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from fhir_bridge.mapping.tables import load_tables
from fhir_bridge.records.openapi import EXAMPLE_RECORD
from fhir_bridge.records.vocabulary import MeasureRule, Vocabulary

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "sample_bundles" / "sessions"
PATIENTS = 200
NPIS = ("1234567893", "1245319599", "1407071236", "1528760436")
THERAPISTS = ("Sam Lee, LMT", "Jo Park, LMT", "Ravi Nair, LMT", "Maya Adaeze Okafor, LMT")
ICD10 = ("M54.2", "M54.50", "G44.209", "I97.2")
PAYERS = ("ACME-HEALTH", "BLUESTONE-MUTUAL", "NORTHWIND-CARE")
REFERRAL_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
FAMILY = ("Rivera", "Lindqvist", "Castellanos", "Ferreira", "Nguyen", "Okafor", "Kim", "Patel")
GIVEN = ("Ana", "Tobias", "Doreen", "Naomi", "Lucia", "Marie", "Omar", "Ines", "Yuki", "Lena")
FIRST_DAY = datetime(2026, 1, 5, 8, 0)
TZ = "-05:00"


def sample_records() -> dict[str, dict[str, Any]]:
    """The four sample records (by file stem) and the contract example, as JSON values."""
    out = {p.stem: json.loads(p.read_text()) for p in sorted(SAMPLES_DIR.glob("*.json"))}
    out["openapi-example"] = json.loads(json.dumps(EXAMPLE_RECORD))
    return out


@cache
def vocabulary() -> Vocabulary:
    """The vocabulary of the shipped ``mappings/`` tables."""
    return Vocabulary.from_tables(load_tables())


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S") + TZ


def patient(i: int) -> dict[str, Any]:
    """The i-th patient (0-based): same MRN, demographics and coverage in every record."""
    rng = random.Random(f"bench-session-patient:{i}")
    out: dict[str, Any] = {
        "mrn": f"BP-{i:05d}",
        "family_name": rng.choice(FAMILY),
        "given_names": [rng.choice(GIVEN)],
        "birth_date": f"{rng.randrange(1940, 2005)}-{rng.randrange(1, 13):02d}-"
        f"{rng.randrange(1, 29):02d}",
        "sex": rng.choice(("female", "male")),
    }
    if i % 5:  # one in five patients pays themselves
        out["coverage"] = {"payer_id": PAYERS[i % len(PAYERS)], "member_id": f"MB{i:09d}"}
    return out


def _value(rng: random.Random, rule: MeasureRule) -> int | float:
    low, high = int(rule.minimum), int(rule.maximum)
    if rule.integer:
        return rng.randrange(low, high + 1)
    return round(rng.uniform(low, high), 1)


def _site(rng: random.Random, vocab: Vocabulary) -> dict[str, str]:
    site = rng.choice(sorted(vocab.body_sites))
    if site in vocab.lateral_body_sites:
        return {"body_site": site, "laterality": rng.choice(sorted(vocab.lateralities))}
    return {"body_site": site}


def _assessments(
    rng: random.Random, vocab: Vocabulary, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    pain_site = _site(rng, vocab)
    pre = rng.randrange(3, 11)
    out: list[dict[str, Any]] = [
        {"phase": "pre", "measure": "pain_nrs", "value": pre, **pain_site,
         "at": _ts(start + timedelta(minutes=2))},
        {"phase": "post", "measure": "pain_nrs", "value": max(0, pre - rng.randrange(0, 4)),
         **pain_site, "at": _ts(end - timedelta(minutes=3))},
    ]  # fmt: skip
    others = sorted(k for k in vocab.measures if k != "pain_nrs")
    for key in rng.sample(others, rng.randrange(1, 4)):
        rule = vocab.measures[key]
        extra = {"laterality": rng.choice(("left", "right"))} if rule.lateral else {}
        for phase in ("pre", "post") if rng.random() < 0.7 else ("pre",):
            item: dict[str, Any] = {"phase": phase, "measure": key, "value": _value(rng, rule)}
            if rule.unit == "deg":
                item["unit"] = "deg"
            out.append({**item, **extra})
    return out


def _goals(vocab: Vocabulary, patient_index: int) -> list[dict[str, Any]]:
    """A patient's goal (half of the patients have one): the same in every record."""
    rng = random.Random(f"bench-session-goal:{patient_index}")
    if rng.random() < 0.5:
        return []
    key = rng.choice(sorted(vocab.measures))
    rule = vocab.measures[key]
    goal: dict[str, Any] = {
        "goal_id": f"G{patient_index % 3 + 1}",
        "description": f"Improve {key.replace('_', ' ')} for daily activities",
        "measure": key,
        "target": _value(rng, rule),
        "due": "2027-03-31",
    }
    if rule.lateral:
        goal["laterality"] = "left"
    return [goal]


def record(n: int, *, patients: int = PATIENTS, prefix: str = "BENCH") -> dict[str, Any]:
    """The n-th synthetic session record (valid, distinct ``session_id``)."""
    vocab = vocabulary()
    rng = random.Random(f"bench-session:{n}")
    p = n % patients
    start = FIRST_DAY + timedelta(days=rng.randrange(330), hours=rng.randrange(10))
    minutes = rng.choice((30, 45, 55, 60))
    end = start + timedelta(minutes=minutes)
    treatments, left = [], minutes
    for _ in range(rng.randrange(1, 4)):
        if left < 5:
            break
        spent = rng.randrange(5, min(left, 30) + 1)
        left -= spent
        technique = rng.choice(sorted(vocab.techniques))
        treatments.append({"technique": technique, **_site(rng, vocab), "minutes": spent})
    therapist = rng.randrange(len(NPIS))
    out: dict[str, Any] = {
        "session_id": f"{prefix}-{n:08d}",
        "status": "completed",
        "patient": patient(p),
        "therapist": {"npi": NPIS[therapist], "name": THERAPISTS[therapist]},
        "started_at": _ts(start),
        "ended_at": _ts(end),
        "diagnoses": rng.sample(ICD10, rng.randrange(1, 3)),
        "treatments": treatments,
        "assessments": _assessments(rng, vocab, start, end),
        "goals": _goals(vocab, p),
        "notes": {
            "subjective": "Reports stiffness after desk work; sleep improving.",
            "objective": "Hypertonicity and tender points in the treated areas.",
            "assessment": "Responding to treatment; range of motion improved within session.",
            "plan": "Continue weekly; home stretching 2x/day; reassess next visit.",
        },
    }
    if p % 4:  # three in four patients come with a referral
        out["referral"] = {"system": REFERRAL_SYSTEM, "value": f"SR-B{p:05d}"}
    return out


def body(n: int, **kwargs: Any) -> bytes:
    """``record(n)`` as the UTF-8 JSON request body."""
    return json.dumps(record(n, **kwargs), separators=(",", ":")).encode()
