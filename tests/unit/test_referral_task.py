"""referral_task: the Task that tracks a referral, built and moved through the workflow."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.mapping.referral_task import (
    ACTIONS,
    IllegalTransition,
    add_output,
    allowed_actions,
    new_task,
    remove_output,
    task_status,
    transition,
)

BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
CREATED = datetime(2026, 3, 2, 9, 30, 0, 123456)
LATER = datetime(2026, 3, 9, 16, 0, 0)

#: every R4 task-status code
STATUSES = (
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
)
#: the legal moves, written out independently of the module: (from, action) -> (to, business)
LEGAL = {
    ("requested", "accept"): ("accepted", "3.0"),
    ("received", "accept"): ("accepted", "3.0"),
    ("requested", "decline"): ("rejected", "4.0"),
    ("received", "decline"): ("rejected", "4.0"),
    ("accepted", "start"): ("in-progress", "5.1.4"),
    ("accepted", "complete"): ("completed", "7.0"),
    ("in-progress", "complete"): ("completed", "7.0"),
}
NO_OPS = {("in-progress", "start")}
MATRIX = [(s, a) for s in STATUSES for a in ACTIONS]


def service_request(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "status": "active",
        "intent": "order",
        "code": {"text": "Medical massage"},
        "subject": {"reference": "Patient/p-1", "display": "Eve Everywoman"},
        "requester": {"reference": "Practitioner/dr-1"},
        **extra,
    }


FILL = {
    "type": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "FILL"}]
    },
    "system": "https://clinic.example.org/referral-task",
    "value": "sr-1",
}
OWNER = {"reference": "Organization/clinic", "display": "Kneads Clinic"}


def fresh(**overrides: Any) -> dict[str, Any]:
    task = new_task(
        service_request_id="sr-1",
        service_request=service_request(),
        owner=OWNER,
        task_identifier=FILL,
        now=CREATED,
    )
    task.update(overrides)
    return task


def in_status(status: str) -> dict[str, Any]:
    """A stored Task (with id) in ``status``, as the EHR or an earlier transition left it."""
    return fresh(id="task-1", status=status)


def errors(resource: dict[str, Any]) -> list[str]:
    return [
        f"{i.code} {i.expression} {i.diagnostics}"
        for i in validate_resource(resource, expected_type="Task")
        if i.severity in ("error", "fatal")
    ]


def business(task: dict[str, Any]) -> str:
    coding = task["businessStatus"]["coding"]
    assert len(coding) == 1
    assert coding[0]["system"] == BSER
    return coding[0]["code"]


def outputs(task: dict[str, Any]) -> list[str]:
    return [o["valueReference"]["reference"] for o in task.get("output", [])]


# --- new_task ------------------------------------------------------------------------------------


def test_new_task() -> None:
    task = fresh()
    assert task == {
        "resourceType": "Task",
        "identifier": [FILL],
        "status": "requested",
        "businessStatus": {
            "coding": [{"system": BSER, "code": "2.0", "display": "Service Request Created"}]
        },
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": "ServiceRequest/sr-1"},
        "for": {"reference": "Patient/p-1", "display": "Eve Everywoman"},
        "authoredOn": "2026-03-02T09:30:00.123456Z",
        "lastModified": "2026-03-02T09:30:00.123456Z",
        "requester": {"reference": "Practitioner/dr-1"},
        "owner": OWNER,
    }
    assert errors(task) == []


def test_new_task_copies_and_never_aliases_inputs() -> None:
    sr = service_request()
    before = copy.deepcopy(sr)
    task = new_task(
        service_request_id="sr-1",
        service_request=sr,
        owner=OWNER,
        task_identifier=FILL,
        now=CREATED,
    )
    task["for"]["reference"] = "Patient/other"
    task["owner"]["display"] = "changed"
    task["identifier"][0]["value"] = "changed"
    assert sr == before
    assert OWNER["display"] == "Kneads Clinic"
    assert FILL["value"] == "sr-1"


def test_new_task_without_subject_or_requester_leaves_them_out() -> None:
    sr = service_request()
    del sr["subject"], sr["requester"]
    task = new_task(
        service_request_id="sr-1",
        service_request=sr,
        owner=OWNER,
        task_identifier=FILL,
        now=CREATED,
    )
    assert "for" not in task
    assert "requester" not in task
    assert errors(task) == []


def test_new_task_converts_an_aware_now_to_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    task = new_task(
        service_request_id="sr-1",
        service_request=service_request(),
        owner=OWNER,
        task_identifier=FILL,
        now=datetime(2026, 3, 2, 4, 30, tzinfo=eastern),
    )
    assert task["authoredOn"] == "2026-03-02T09:30:00.000000Z"


@pytest.mark.parametrize("bad_id", ["", "ServiceRequest/sr-1", "x" * 65, "a b"])
def test_new_task_rejects_a_bad_id(bad_id: str) -> None:
    with pytest.raises(ValueError, match="not a FHIR id"):
        new_task(
            service_request_id=bad_id,
            service_request=service_request(),
            owner=OWNER,
            task_identifier=FILL,
            now=CREATED,
        )


def test_new_task_rejects_a_non_service_request() -> None:
    with pytest.raises(ValueError, match="not a ServiceRequest"):
        new_task(
            service_request_id="sr-1",
            service_request={"resourceType": "Patient"},
            owner=OWNER,
            task_identifier=FILL,
            now=CREATED,
        )


# --- transition: the full status x action matrix --------------------------------------------------


@pytest.mark.parametrize(("status", "action"), MATRIX)
def test_matrix(status: str, action: str) -> None:
    task = in_status(status)
    before = copy.deepcopy(task)
    reason = "Out of our scope" if action == "decline" else None
    if (status, action) in LEGAL:
        moved = transition(task, action, now=LATER, reason=reason)
        target, code = LEGAL[status, action]
        assert moved["status"] == target
        assert business(moved) == code
        assert moved["lastModified"] == "2026-03-09T16:00:00.000000Z"
        assert moved["authoredOn"] == before["authoredOn"]
        assert errors(moved) == []
    elif (status, action) in NO_OPS:
        assert transition(task, action, now=LATER, reason=reason) == before
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(task, action, now=LATER, reason=reason)
        assert info.value.current == status
        assert info.value.action == action
        assert f"allowed from {status}:" in str(info.value)
    assert task == before  # the input is never touched


@pytest.mark.parametrize("status", STATUSES)
def test_allowed_actions_matches_the_matrix(status: str) -> None:
    expected = tuple(a for a in ACTIONS if (status, a) in LEGAL or (status, a) in NO_OPS)
    assert allowed_actions(status) == expected


def test_allowed_actions_of_an_unknown_status_is_empty() -> None:
    assert allowed_actions("bogus") == ()


def test_illegal_transition_message_lists_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition) as info:
        transition(in_status("requested"), "complete", now=LATER)
    assert str(info.value) == (
        "cannot complete a referral Task that is requested; allowed from requested: accept, decline"
    )
    assert info.value.allowed == ("accept", "decline")
    with pytest.raises(IllegalTransition, match="allowed from completed: nothing"):
        transition(in_status("completed"), "accept", now=LATER)


def test_unknown_action() -> None:
    with pytest.raises(ValueError, match="unknown action 'cancel'"):
        transition(in_status("requested"), "cancel", now=LATER)


def test_not_a_task() -> None:
    with pytest.raises(ValueError, match="not a Task"):
        transition(service_request(), "accept", now=LATER)


def test_task_without_status() -> None:
    task = in_status("requested")
    del task["status"]
    with pytest.raises(ValueError, match="no status"):
        transition(task, "accept", now=LATER)


def test_whole_happy_path_stays_valid() -> None:
    task = in_status("requested")
    steps = [
        lambda t: transition(t, "accept", now=LATER),
        lambda t: add_output(t, "Procedure/visit-1", now=LATER),
        lambda t: transition(t, "start", now=LATER),
        lambda t: add_output(t, "Procedure/visit-2", now=LATER),
        lambda t: transition(t, "start", now=LATER),
        lambda t: remove_output(t, "Procedure/visit-1", now=LATER),
        lambda t: transition(t, "complete", now=LATER),
    ]
    for step in steps:
        task = step(task)
        assert errors(task) == []
    assert task_status(task) == "completed"
    assert business(task) == "7.0"
    assert outputs(task) == ["Procedure/visit-2"]


# --- decline and statusReason --------------------------------------------------------------------


@pytest.mark.parametrize("reason", [None, "", "   "])
@pytest.mark.parametrize("status", ["requested", "received"])
def test_decline_needs_a_reason(status: str, reason: str | None) -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        transition(in_status(status), "decline", now=LATER, reason=reason)


def test_decline_records_the_reason() -> None:
    moved = transition(
        in_status("received"), "decline", now=LATER, reason="  Not a massage indication  "
    )
    assert moved["statusReason"] == {"text": "Not a massage indication"}
    assert moved["businessStatus"]["coding"][0]["display"] == "Service Request Declined"


def test_an_illegal_decline_without_reason_is_illegal_first() -> None:
    with pytest.raises(IllegalTransition):
        transition(in_status("completed"), "decline", now=LATER)


def test_a_stale_status_reason_is_dropped_and_a_new_one_kept() -> None:
    task = in_status("received")
    task["statusReason"] = {"text": "waiting for insurance"}
    assert "statusReason" not in transition(task, "accept", now=LATER)
    accepted = transition(task, "accept", now=LATER, reason="Insurance verified")
    assert accepted["statusReason"] == {"text": "Insurance verified"}


# --- idempotence ---------------------------------------------------------------------------------


def test_start_on_in_progress_is_a_no_op_every_visit() -> None:
    started = transition(in_status("accepted"), "start", now=LATER)
    again = transition(started, "start", now=LATER + timedelta(days=7))
    assert again == started
    assert again is not started
    assert again["lastModified"] == "2026-03-09T16:00:00.000000Z"


def test_add_output() -> None:
    task = in_status("accepted")
    with_visit = add_output(task, "Procedure/visit-1", now=LATER)
    assert with_visit["output"] == [
        {
            "type": {
                "coding": [
                    {
                        "system": SDOHCC,
                        "code": "resulting-activity",
                        "display": "Resulting Activity",
                    }
                ]
            },
            "valueReference": {"reference": "Procedure/visit-1"},
        }
    ]
    assert with_visit["lastModified"] == "2026-03-09T16:00:00.000000Z"
    assert "output" not in task
    assert errors(with_visit) == []


def test_add_output_is_idempotent() -> None:
    once = add_output(in_status("in-progress"), "Procedure/visit-1", now=LATER)
    twice = add_output(once, "Procedure/visit-1", now=LATER + timedelta(hours=1))
    assert twice == once
    assert twice is not once
    both = add_output(once, "Procedure/visit-2", now=LATER)
    assert outputs(both) == ["Procedure/visit-1", "Procedure/visit-2"]


def test_add_output_appends_after_foreign_outputs() -> None:
    foreign = {
        "type": {"text": "Referral feedback"},
        "valueReference": {"reference": "Procedure/visit-1"},
    }
    task = in_status("in-progress")
    task["output"] = [foreign]
    added = add_output(task, "Procedure/visit-1", now=LATER)
    assert added["output"][0] == foreign
    assert len(added["output"]) == 2
    assert errors(added) == []


def test_remove_output() -> None:
    task = add_output(in_status("in-progress"), "Procedure/visit-1", now=CREATED)
    task = add_output(task, "Procedure/visit-2", now=CREATED)
    removed = remove_output(task, "Procedure/visit-1", now=LATER)
    assert outputs(removed) == ["Procedure/visit-2"]
    assert removed["lastModified"] == "2026-03-09T16:00:00.000000Z"
    assert removed["status"] == "in-progress"
    emptied = remove_output(removed, "Procedure/visit-2", now=LATER)
    assert "output" not in emptied
    assert errors(emptied) == []


def test_remove_output_keeps_foreign_outputs_and_is_a_no_op_when_absent() -> None:
    foreign = {
        "type": {"text": "Referral feedback"},
        "valueReference": {"reference": "Procedure/visit-1"},
    }
    task = in_status("in-progress")
    task["output"] = [foreign]
    assert remove_output(task, "Procedure/visit-1", now=LATER) == task
    assert remove_output(in_status("accepted"), "Procedure/visit-9", now=LATER) == in_status(
        "accepted"
    )


@pytest.mark.parametrize("reference", ["", "  "])
def test_outputs_need_a_reference(reference: str) -> None:
    with pytest.raises(ValueError, match="reference is required"):
        add_output(in_status("accepted"), reference, now=LATER)
    with pytest.raises(ValueError, match="reference is required"):
        remove_output(in_status("accepted"), reference, now=LATER)


# --- what survives -------------------------------------------------------------------------------


def ehr_task() -> dict[str, Any]:
    """An EHR's own Task with extensions, contained resources, meta, notes and a PLAC id."""
    task = in_status("received")
    task.update(
        {
            "meta": {
                "versionId": "3",
                "tag": [{"system": "https://ehr.example.org/tags", "code": "x"}],
            },
            "extension": [
                {"url": "https://ehr.example.org/StructureDefinition/routing", "valueString": "PT"}
            ],
            "modifierExtension": [
                {"url": "https://ehr.example.org/StructureDefinition/urgent", "valueBoolean": False}
            ],
            "contained": [
                {
                    "resourceType": "Practitioner",
                    "id": "doc",
                    "name": [{"family": "Welby"}],
                }
            ],
            "requester": {"reference": "#doc"},
            "priority": "urgent",
            "note": [{"text": "Patient prefers mornings"}],
            "restriction": {"repetitions": 8},
        }
    )
    task["identifier"].insert(
        0,
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}
                ]
            },
            "system": "https://ehr.example.org/task",
            "value": "T-77",
        },
    )
    return task


MANAGED = {"status", "businessStatus", "statusReason", "lastModified", "output"}


def test_ehr_elements_survive_every_step() -> None:
    task = ehr_task()
    assert errors(task) == []
    original = copy.deepcopy(task)
    for step in (
        lambda t: transition(t, "accept", now=LATER),
        lambda t: transition(t, "start", now=LATER),
        lambda t: add_output(t, "Procedure/visit-1", now=LATER),
        lambda t: remove_output(t, "Procedure/visit-1", now=LATER),
        lambda t: transition(t, "complete", now=LATER, reason="8 of 8 visits done"),
    ):
        task = step(task)
        assert errors(task) == []
        for key, value in original.items():
            if key not in MANAGED:
                assert task[key] == value, key
    assert task["statusReason"] == {"text": "8 of 8 visits done"}


def test_unknown_elements_survive() -> None:
    """Elements this module (or R4) does not know are carried over as they were."""
    task = in_status("requested")
    task["futureElement"] = {"deep": [1, 2, {"x": None}]}
    task["_status"] = {"extension": [{"url": "https://ehr.example.org/x", "valueCode": "y"}]}
    moved = transition(task, "accept", now=LATER)
    moved = add_output(moved, "Procedure/visit-1", now=LATER)
    assert moved["futureElement"] == {"deep": [1, 2, {"x": None}]}
    assert moved["_status"] == task["_status"]


def test_task_status() -> None:
    assert task_status(in_status("on-hold")) == "on-hold"
    with pytest.raises(ValueError, match="not a Task"):
        task_status({"resourceType": "ServiceRequest", "status": "active"})


def test_transition_timestamps_are_utc_instants() -> None:
    aware = datetime(2026, 3, 9, 18, 0, tzinfo=timezone(timedelta(hours=2)))
    moved = transition(in_status("requested"), "accept", now=aware)
    assert moved["lastModified"] == "2026-03-09T16:00:00.000000Z"
    assert transition(in_status("requested"), "accept", now=LATER.replace(tzinfo=UTC)) == moved
