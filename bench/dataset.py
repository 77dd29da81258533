"""Deterministic synthetic clinic data: a few practitioners and payers, then patients.

Every patient brings one Patient, Coverage, Condition and ServiceRequest, eight massage
sessions (Procedure) and forty Observations (per session: pain NRS before and after, two
range-of-motion measures and an Oswestry Disability Index score), i.e. ``PER_PATIENT``
resources. Each patient's content comes from its own seeded RNG, so the stream for N
resources is a prefix of the stream for any larger N and a load can resume where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

MRN = "https://clinic.example.org/fhir/mrn"
NPI = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
MEASURE = "https://clinic.example.org/fhir/measure"
SESSION = "https://clinic.example.org/fhir/session"
PLACER = "https://ehr.northside.example.org/fhir/placer"
MEMBER = "https://payers.example.org/member-id"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
PAIN_CODE = "72514-3"

PRACTITIONERS = 20
PAYERS = 6
FIXED = PRACTITIONERS + PAYERS
SESSIONS = 8
OBS_PER_SESSION = 5
PER_PATIENT = 4 + SESSIONS + SESSIONS * OBS_PER_SESSION  # 52
TZ = "-05:00"

SURNAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Gomez",
    "Phillips",
    "Evans",
    "Turner",
    "Diaz",
    "Parker",
    "Cruz",
    "Edwards",
    "Collins",
    "Reyes",
    "Stewart",
    "Morris",
    "Morales",
    "Murphy",
    "Cook",
    "Rogers",
    "Gutierrez",
    "Ortiz",
    "Morgan",
    "Cooper",
    "Peterson",
    "Bailey",
    "Reed",
    "Kelly",
    "Howard",
    "Ramos",
    "Kim",
    "Cox",
    "Ward",
    "Richardson",
    "Watson",
    "Brooks",
    "Chavez",
    "Wood",
    "James",
    "Bennett",
    "Gray",
    "Mendoza",
    "Ruiz",
    "Hughes",
    "Price",
    "Alvarez",
    "Castillo",
    "Sanders",
    "Patel",
    "Myers",
    "Long",
    "Ross",
    "Foster",
    "Jimenez",
    "Powell",
    "Jenkins",
    "Perry",
    "Russell",
    "Sullivan",
    "Bell",
    "Coleman",
    "Butler",
    "Henderson",
    "Barnes",
    "Gonzales",
    "Fisher",
    "Vasquez",
    "Simmons",
    "Romero",
    "Jordan",
    "Patterson",
    "Alexander",
    "Hamilton",
    "Graham",
    "Reynolds",
    "Griffin",
    "Wallace",
    "Moreno",
    "West",
    "Cole",
    "Hayes",
    "Bryant",
    "Herrera",
    "Gibson",
    "Ellis",
    "Tran",
    "Medina",
    "Aguilar",
    "Stevens",
    "Murray",
    "Ford",
    "Castro",
    "Marshall",
    "Owens",
    "Harrison",
    "Fernandez",
    "McDonald",
    "Woods",
    "Washington",
    "Kennedy",
    "Wells",
    "Vargas",
    "Henry",
    "Chen",
    "Freeman",
    "Webb",
    "Tucker",
    "Guzman",
    "Burns",
    "Crawford",
    "Olson",
    "Simpson",
    "Porter",
    "Hunter",
    "Gordon",
    "Mendez",
    "Silva",
    "Shaw",
    "Snyder",
    "Mason",
    "Dixon",
    "Munoz",
    "Hunt",
    "Hicks",
    "Holmes",
    "Palmer",
    "Wagner",
    "Black",
    "Robertson",
    "Boyd",
    "Rose",
    "Stone",
    "Salazar",
    "Fox",
    "Warren",
    "Mills",
    "Meyer",
    "Rice",
    "Schmidt",
    "Garza",
    "Daniels",
    "Ferguson",
    "Nichols",
    "Stephens",
    "Soto",
    "Weaver",
    "Ryan",
    "Gardner",
    "Payne",
    "Grant",
]
GIVEN = [
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Margaret",
    "Sandra",
    "Ashley",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Rebecca",
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "George",
    "Timothy",
]
CONDITIONS = (
    ("M54.2", "Cervicalgia"),
    ("M54.50", "Low back pain, unspecified"),
    ("M62.830", "Muscle spasm of back"),
    ("M79.1", "Myalgia"),
    ("M25.511", "Pain in right shoulder"),
    ("G44.209", "Tension-type headache, unspecified"),
)
MEASURES = (
    ("rom-cervical-rotation", "Cervical rotation range of motion", "deg", 40, 85, "exam"),
    ("rom-lumbar-flexion", "Lumbar flexion range of motion", "deg", 30, 90, "exam"),
    ("odi", "Oswestry Disability Index", "%", 4, 60, "survey"),
)
EPISODE_FIRST = datetime(2025, 1, 6)
EPISODE_DAYS = 660  # last episode starts late October 2026, so sessions end within 2026


def patient_id(i: int) -> str:
    """Id of the i-th patient (0-based)."""
    return f"pat-{i:06d}"


def practitioner_id(k: int) -> str:
    """Id of the k-th practitioner (0-based)."""
    return f"prac-{k + 1:04d}"


def patients_in(count: int) -> int:
    """How many patients a store of ``count`` generated resources holds completely."""
    return max(0, (count - FIXED) // PER_PATIENT)


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S") + TZ


def _rng(i: int) -> random.Random:
    return random.Random(f"fhir-bridge-bench:{i}")


def fixed_resources() -> list[dict[str, Any]]:
    """Practitioners and payer organizations shared by all patients."""
    rng = _rng(-1)
    out: list[dict[str, Any]] = []
    for k in range(PRACTITIONERS):
        out.append(
            {
                "resourceType": "Practitioner",
                "id": practitioner_id(k),
                "identifier": [{"system": NPI, "value": f"1{rng.randrange(10**8, 10**9)}"}],
                "active": True,
                "name": [{"family": rng.choice(SURNAMES), "given": [rng.choice(GIVEN)]}],
            }
        )
    for k in range(PAYERS):
        out.append(
            {
                "resourceType": "Organization",
                "id": f"org-{k + 1:04d}",
                "active": True,
                "identifier": [{"system": NPI, "value": f"1{rng.randrange(10**8, 10**9)}"}],
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                "code": "pay",
                            }
                        ]
                    }
                ],
                "name": f"Example Health Plan {k + 1}",
            }
        )
    return out


def patient_name(i: int) -> tuple[str, str]:
    """(family, given) of the i-th patient, as patient_resources() writes it."""
    rng = _rng(i)
    return rng.choice(SURNAMES), rng.choice(GIVEN)


def patient_resources(i: int) -> list[dict[str, Any]]:
    """The ``PER_PATIENT`` resources of the i-th patient, referenced resources first."""
    rng = _rng(i)
    family, given = rng.choice(SURNAMES), rng.choice(GIVEN)
    pid = patient_id(i)
    subject = {"reference": f"Patient/{pid}"}
    birth = datetime(1940, 1, 1) + timedelta(days=rng.randrange(65 * 365))
    start = EPISODE_FIRST + timedelta(days=rng.randrange(EPISODE_DAYS))
    cond_code, cond_text = rng.choice(CONDITIONS)
    cpt = rng.choice(("97124", "97140"))
    requester = practitioner_id(rng.randrange(PRACTITIONERS))
    therapist = practitioner_id(rng.randrange(PRACTITIONERS))
    payer = f"org-{rng.randrange(PAYERS) + 1:04d}"
    sr_ref = {"reference": f"ServiceRequest/sr-{i:06d}"}
    cond_ref = {"reference": f"Condition/cond-{i:06d}"}
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": MRN, "value": f"MRN{i:08d}"}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": f"555-{rng.randrange(10**7):07d}"}],
            "gender": rng.choice(("female", "male")),
            "birthDate": birth.strftime("%Y-%m-%d"),
            "address": [{"line": [f"{rng.randrange(1, 9999)} Main St"], "city": "Springfield"}],
        },
        {
            "resourceType": "Coverage",
            "id": f"cov-{i:06d}",
            "identifier": [{"system": MEMBER, "value": f"M{i:09d}"}],
            "status": "active",
            "subscriberId": f"M{i:09d}",
            "beneficiary": subject,
            "payor": [{"reference": f"Organization/{payer}"}],
        },
        {
            "resourceType": "Condition",
            "id": f"cond-{i:06d}",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"coding": [{"system": ICD10, "code": cond_code, "display": cond_text}]},
            "subject": subject,
            "onsetDateTime": _ts(start - timedelta(days=rng.randrange(10, 200))),
        },
        {
            "resourceType": "ServiceRequest",
            "id": f"sr-{i:06d}",
            "identifier": [{"system": PLACER, "value": f"SR-{i:07d}"}],
            "status": "active",
            "intent": "order",
            "code": {"coding": [{"system": CPT, "code": cpt}]},
            "quantityQuantity": {"value": SESSIONS},
            "subject": subject,
            "authoredOn": (start - timedelta(days=rng.randrange(1, 14))).strftime("%Y-%m-%d"),
            "requester": {"reference": f"Practitioner/{requester}"},
            "reasonCode": [{"coding": [{"system": ICD10, "code": cond_code}]}],
            "reasonReference": [cond_ref],
            "insurance": [{"reference": f"Coverage/cov-{i:06d}"}],
        },
    ]
    sessions = [
        start + timedelta(days=7 * s, hours=rng.randrange(8, 18), minutes=rng.choice((0, 30)))
        for s in range(SESSIONS)
    ]
    for s, at in enumerate(sessions, start=1):
        out.append(
            {
                "resourceType": "Procedure",
                "id": f"proc-{i:06d}-{s:02d}",
                "identifier": [{"system": SESSION, "value": f"S{i:06d}{s:02d}"}],
                "basedOn": [sr_ref],
                "status": "completed",
                "code": {"coding": [{"system": CPT, "code": "97124" if s % 2 else "97140"}]},
                "subject": subject,
                "performedPeriod": {"start": _ts(at), "end": _ts(at + timedelta(minutes=55))},
                "performer": [{"actor": {"reference": f"Practitioner/{therapist}"}}],
                "reasonReference": [cond_ref],
            }
        )
    pain = rng.randrange(5, 10)
    n = 0
    for s, at in enumerate(sessions, start=1):
        proc_ref = {"reference": f"Procedure/proc-{i:06d}-{s:02d}"}
        after = max(0, pain - rng.randrange(1, 4))
        values = [
            (PAIN_CODE, LOINC, "Pain severity 0-10 before session", "{score}", pain, "survey", at),
            (
                PAIN_CODE,
                LOINC,
                "Pain severity 0-10 after session",
                "{score}",
                after,
                "survey",
                at + timedelta(minutes=56),
            ),
        ]
        for code, text, unit, low, high, category in MEASURES:
            values.append((code, MEASURE, text, unit, rng.randrange(low, high), category, at))
        for code, system, text, unit, value, category, when in values:
            n += 1
            out.append(
                {
                    "resourceType": "Observation",
                    "id": f"obs-{i:06d}-{n:02d}",
                    "basedOn": [sr_ref],
                    "partOf": [proc_ref],
                    "status": "final",
                    "category": [{"coding": [{"system": OBS_CAT, "code": category}]}],
                    "code": {"coding": [{"system": system, "code": code}], "text": text},
                    "subject": subject,
                    "effectiveDateTime": _ts(when),
                    "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
                }
            )
        pain = max(1, after + rng.randrange(0, 2))
    assert len(out) == PER_PATIENT
    return out


def stream(count: int, skip: int = 0) -> Iterator[dict[str, Any]]:
    """The first ``count`` resources of the dataset, leaving out the first ``skip``."""
    produced = 0
    if skip < FIXED:
        yield from fixed_resources()[skip:count]
        produced = min(FIXED, count)
    else:
        produced = skip
    i = (produced - FIXED) // PER_PATIENT
    offset = (produced - FIXED) % PER_PATIENT
    while produced < count:
        chunk = patient_resources(i)[offset : offset + (count - produced)]
        yield from chunk
        produced += len(chunk)
        i, offset = i + 1, 0
