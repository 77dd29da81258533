"""The FHIR R4 Task that tracks a referral (a ServiceRequest) through the clinic (pure).

Builds the Task for a referral that came without one and moves it through the clinic's
workflow. Everything here works on plain dicts and returns new ones (the input is never
mutated); the caller passes ``now`` (naive UTC, or aware and converted) and stores the result.

Sources: FHIR R4 Task and workflow-management (``code = task-code#fulfill``, ``focus`` = the
ServiceRequest, ``intent = order``), BSeR 2.0 Referral Task (business status codes from
``TaskBusinessStatusCS``, displays as in the IG's CodeSystem), Gravity SDOHCC Task For
Referral Management (``output`` slice ``resulting-activity`` -> Procedure).

The state machine (``ACTIONS`` from each ``Task.status``)::

    requested | received --accept-->   accepted     (BSeR 3.0 Service Request Accepted)
    requested | received --decline-->  rejected     (BSeR 4.0 Service Request Declined)
    accepted             --start-->    in-progress  (BSeR 5.1.4 Service Request Event Completed)
    in-progress          --start-->    in-progress  (no-op: every visit may call it)
    accepted | in-progress --complete--> completed  (BSeR 7.0 Service Request Fulfillment Completed)

Everything else raises ``IllegalTransition``: ``completed``, ``rejected``, ``cancelled``,
``entered-in-error`` and ``failed`` are final; ``draft`` belongs to the requester; ``ready``
and ``on-hold`` are not states this clinic's workflow enters.

Decisions where the sources differ or are silent:

- ``received`` is a legal source state (R4 core Task), although Gravity's Task profile forbids
  it; the bridge never sets ``received`` itself, so a Task it builds also conforms to Gravity.
- ``start`` is triggered by the first documented visit, i.e. an event that has taken place, so
  it sets BSeR ``5.1.4`` (Event Completed) rather than ``5.1.1`` (Event Scheduled; the bridge
  does not see the schedule). Later visits leave ``5.1.4`` in place, which stays true.
- ``decline`` needs a non-blank reason (BSeR/Gravity: ``statusReason.text`` 1..1); a missing
  one is a ``ValueError`` (bad input), checked after the transition itself is found legal.
- ``statusReason`` explains the current status, so each transition replaces it: with
  ``{"text": reason}`` when a reason is given, otherwise it is dropped (it described the old
  status). ``businessStatus`` is replaced the same way. Every other element (extensions,
  contained resources, elements this module does not know) is carried over untouched.
- ``add_output``/``remove_output`` do not look at the status: a visit documented against a
  closed referral is still the truth and the caller flags it; retracting the last visit does
  not move an ``in-progress`` Task back (R4 has no such transition).
- A no-op (``start`` when in progress, an output already there or not there) returns an equal
  dict with ``lastModified`` unchanged, so the caller can detect "nothing to write" by ``==``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fhir_bridge.fhir.dates import to_instant
from fhir_bridge.fhir.validation import ID_RE

__all__ = [
    "ACTIONS",
    "BSER_BUSINESS_STATUS",
    "FILL_TYPE",
    "IllegalTransition",
    "add_output",
    "allowed_actions",
    "new_task",
    "remove_output",
    "task_status",
    "transition",
]

TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
BSER_BUSINESS_STATUS = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
SDOHCC_TEMPORARY_CODES = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
#: Identifier.type of the filler (recipient) identifier the clinic gives its Tasks.
FILL_TYPE = {"coding": [{"system": V2_0203, "code": "FILL"}]}

#: what staff (or a documented visit) can do to a referral Task, in display order.
ACTIONS = ("accept", "decline", "start", "complete")

#: BSeR business status (code, display) per Task status the bridge sets.
_BUSINESS_STATUS = {
    "requested": ("2.0", "Service Request Created"),
    "accepted": ("3.0", "Service Request Accepted"),
    "rejected": ("4.0", "Service Request Declined"),
    "in-progress": ("5.1.4", "Service Request Event Completed"),
    "completed": ("7.0", "Service Request Fulfillment Completed"),
}

#: (current status, action) -> new status; the whole state machine.
_TRANSITIONS: dict[tuple[str, str], str] = {
    ("requested", "accept"): "accepted",
    ("received", "accept"): "accepted",
    ("requested", "decline"): "rejected",
    ("received", "decline"): "rejected",
    ("accepted", "start"): "in-progress",
    ("in-progress", "start"): "in-progress",
    ("accepted", "complete"): "completed",
    ("in-progress", "complete"): "completed",
}

_RESULTING_ACTIVITY = {
    "coding": [
        {
            "system": SDOHCC_TEMPORARY_CODES,
            "code": "resulting-activity",
            "display": "Resulting Activity",
        }
    ]
}


class IllegalTransition(Exception):
    """``action`` is not allowed on a Task whose status is ``current``."""

    def __init__(self, current: str, action: str) -> None:
        self.current = current
        self.action = action
        self.allowed = allowed_actions(current)
        allowed = ", ".join(self.allowed) if self.allowed else "nothing"
        super().__init__(
            f"cannot {action} a referral Task that is {current}; allowed from {current}: {allowed}"
        )


def allowed_actions(status: str) -> tuple[str, ...]:
    """The actions ``transition`` accepts from ``status``, in ``ACTIONS`` order."""
    return tuple(a for a in ACTIONS if (status, a) in _TRANSITIONS)


def task_status(task: Mapping[str, Any]) -> str:
    """``Task.status``.

    :raise ValueError: if ``task`` is not a Task or has no status.
    """
    _require_task(task)
    status = task.get("status")
    if not isinstance(status, str) or not status:
        raise ValueError("the Task has no status")
    return status


def new_task(
    *,
    service_request_id: str,
    service_request: Mapping[str, Any],
    owner: Mapping[str, Any],
    task_identifier: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """A ``requested`` fulfilment Task for a referral the EHR sent without one (no ``id``).

    ``for`` and ``requester`` are copied from the ServiceRequest's ``subject`` and
    ``requester`` (left out when it has none); ``owner`` is the clinic's reference and
    ``task_identifier`` the clinic's FILL identifier (see ``FILL_TYPE``).

    :raise ValueError: if ``service_request_id`` is not a FHIR id or ``service_request`` is
        not a ServiceRequest.
    """
    if not isinstance(service_request_id, str) or not ID_RE.fullmatch(service_request_id):
        raise ValueError(f"{service_request_id!r} is not a FHIR id")
    if service_request.get("resourceType") != "ServiceRequest":
        raise ValueError("service_request is not a ServiceRequest")
    instant = _instant(now)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [copy.deepcopy(dict(task_identifier))],
        "status": "requested",
        "businessStatus": _business_status("requested"),
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{service_request_id}"},
    }
    if isinstance(service_request.get("subject"), dict):
        task["for"] = copy.deepcopy(service_request["subject"])
    task["authoredOn"] = instant
    task["lastModified"] = instant
    if isinstance(service_request.get("requester"), dict):
        task["requester"] = copy.deepcopy(service_request["requester"])
    task["owner"] = copy.deepcopy(dict(owner))
    return task


def transition(
    task: Mapping[str, Any], action: str, *, now: datetime, reason: str | None = None
) -> dict[str, Any]:
    """A copy of ``task`` moved by ``action``, with ``lastModified = now``.

    ``reason`` becomes ``statusReason.text`` (required for ``decline``). ``start`` on an
    ``in-progress`` Task returns an unchanged copy.

    :raise ValueError: for an unknown action, a non-Task, or ``decline`` without a reason.
    :raise IllegalTransition: if ``action`` is not allowed from the Task's status.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    current = task_status(task)
    target = _TRANSITIONS.get((current, action))
    if target is None:
        raise IllegalTransition(current, action)
    text = reason.strip() if isinstance(reason, str) else ""
    if action == "decline" and not text:
        raise ValueError("declining a referral needs a reason (Task.statusReason.text)")
    moved = copy.deepcopy(dict(task))
    if target == current:
        return moved
    moved["status"] = target
    if text:
        moved["statusReason"] = {"text": text}
    else:
        moved.pop("statusReason", None)
    moved["businessStatus"] = _business_status(target)
    moved["lastModified"] = _instant(now)
    return moved


def add_output(
    task: Mapping[str, Any], procedure_reference: str, *, now: datetime
) -> dict[str, Any]:
    """A copy of ``task`` with a ``resulting-activity`` output -> ``procedure_reference``.

    Idempotent: when that output is already there the copy is unchanged.

    :raise ValueError: if ``task`` is not a Task or the reference is blank.
    """
    _require_task(task)
    _require_reference(procedure_reference)
    result = copy.deepcopy(dict(task))
    outputs = result.get("output") or []
    if any(_is_activity(o, procedure_reference) for o in outputs):
        return result
    result["output"] = [
        *outputs,
        {
            "type": copy.deepcopy(_RESULTING_ACTIVITY),
            "valueReference": {"reference": procedure_reference},
        },
    ]
    result["lastModified"] = _instant(now)
    return result


def remove_output(
    task: Mapping[str, Any], procedure_reference: str, *, now: datetime
) -> dict[str, Any]:
    """A copy of ``task`` without the ``resulting-activity`` output -> ``procedure_reference``.

    For a retracted (entered-in-error) visit. Outputs of other types stay; an emptied
    ``output`` is dropped (FHIR allows no empty arrays); nothing to remove -> unchanged copy.

    :raise ValueError: if ``task`` is not a Task or the reference is blank.
    """
    _require_task(task)
    _require_reference(procedure_reference)
    result = copy.deepcopy(dict(task))
    outputs = result.get("output") or []
    kept = [o for o in outputs if not _is_activity(o, procedure_reference)]
    if len(kept) == len(outputs):
        return result
    if kept:
        result["output"] = kept
    else:
        del result["output"]
    result["lastModified"] = _instant(now)
    return result


# --- helpers -------------------------------------------------------------------------------------


def _instant(now: datetime) -> str:
    """``now`` as a FHIR instant; an aware datetime is converted to UTC first."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return to_instant(now)


def _business_status(status: str) -> dict[str, Any]:
    code, display = _BUSINESS_STATUS[status]
    return {"coding": [{"system": BSER_BUSINESS_STATUS, "code": code, "display": display}]}


def _is_activity(output: Any, reference: str) -> bool:
    """True for a ``resulting-activity`` output whose valueReference is ``reference``."""
    if not isinstance(output, dict):
        return False
    kind = output.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    typed = any(
        isinstance(c, dict)
        and c.get("system") == SDOHCC_TEMPORARY_CODES
        and c.get("code") == "resulting-activity"
        for c in codings or ()
    )
    value = output.get("valueReference")
    return typed and isinstance(value, dict) and value.get("reference") == reference


def _require_task(task: Mapping[str, Any]) -> None:
    if not isinstance(task, Mapping) or task.get("resourceType") != "Task":
        raise ValueError("not a Task")


def _require_reference(reference: str) -> None:
    if not isinstance(reference, str) or not reference.strip():
        raise ValueError("a Procedure reference is required")
