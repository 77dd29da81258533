"""Property: any sequence of referral Bundles (new, re-sent unchanged, re-sent changed, re-sent
invalid, a new referral for the same patient) leaves no duplicate, loses no change, refuses
every invalid content, and every 2xx is what is stored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import _empty_tables

FHIR_JSON = "application/fhir+json"
SAMPLE = Path(__file__).resolve().parents[2] / "sample_bundles/referrals/whiplash-transaction.json"
PLACER_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
#: resources every referral of the one patient shares (matched on their identifiers)
SHARED = {"Patient": 1, "Practitioner": 1, "Organization": 2, "Coverage": 1, "PractitionerRole": 1}

steps = st.lists(
    st.tuples(
        st.sampled_from(["new", "unchanged", "changed", "invalid"]),
        st.integers(min_value=0, max_value=3),  # which referral (new: its number)
        st.integers(min_value=1, max_value=30),  # visits prescribed (changed)
        st.booleans(),  # the ServiceRequest sent as a conditional create
        st.sampled_from(["intent", "reason", "requester"]),  # what makes it invalid
    ),
    min_size=1,
    max_size=6,
)


def bundle(placer: str, visits: int, note: str, conditional: bool) -> dict:
    body = json.loads(SAMPLE.read_text())
    sr_entry = body["entry"][-1]
    sr = sr_entry["resource"]
    sr["identifier"][0]["value"] = placer
    sr["occurrenceTiming"]["repeat"]["count"] = visits
    sr["note"] = [{"text": note}]
    if conditional:
        sr_entry["request"]["ifNoneExist"] = f"identifier={PLACER_SYSTEM}|{placer}"
    return body


def spoil(body: dict, how: str) -> dict:
    body = copy.deepcopy(body)
    sr = body["entry"][-1]["resource"]
    if how == "intent":
        sr["intent"] = "plan"
    elif how == "reason":
        sr["reasonCode"][0]["coding"][0]["code"] = "S13"  # a header, not billable
    else:
        sr.pop("requester")
    return body


def count(client, rtype: str) -> int:
    return client.get(f"/fhir/{rtype}?_summary=count").get_json()["total"]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=steps)
def test_referral_sequences_keep_every_change_and_duplicate_nothing(runtime, client, sequence):
    _empty_tables(runtime)
    on_file: dict[str, tuple[int, str]] = {}  # placer -> (visits, note) last accepted
    for n, (kind, which, visits, conditional, how) in enumerate(sequence):
        placers = sorted(on_file)
        if kind == "new" or not placers:
            placer = f"SR-SEQ-{len(placers)}-{which}"
            if placer in on_file:
                continue
            sent = (visits, f"note {n}")
        else:
            placer = placers[which % len(placers)]
            sent = on_file[placer] if kind == "unchanged" else (visits, f"changed note {n}")
        body = bundle(placer, *sent, conditional)
        if kind == "invalid" and placers:
            body = spoil(body, how)
        resp = client.post("/fhir", data=json.dumps(body), content_type=FHIR_JSON)
        if kind == "invalid" and placers:
            assert resp.status_code == 422, (n, how)
        else:
            assert resp.status_code == 200, resp.get_json()
            on_file[placer] = sent
            sr_loc = resp.get_json()["entry"][-1]["response"]["location"]
            stored = client.get(f"/fhir/{sr_loc.split('/_history')[0]}").get_json()
            assert stored["occurrenceTiming"]["repeat"]["count"] == sent[0]
            assert stored["note"] == [{"text": sent[1]}]
        # the invariants, after every step
        assert count(client, "ServiceRequest") == len(on_file)
        assert count(client, "Condition") == len(on_file)
        assert count(client, "Task") == len(on_file)
        for rtype, expected in SHARED.items():
            assert count(client, rtype) == expected, rtype
        for placer, (visits_, note) in on_file.items():
            found = client.get(
                f"/fhir/ServiceRequest?identifier={PLACER_SYSTEM}|{placer}"
            ).get_json()["entry"]
            assert len(found) == 1
            assert found[0]["resource"]["occurrenceTiming"]["repeat"]["count"] == visits_
            assert found[0]["resource"]["note"] == [{"text": note}]
