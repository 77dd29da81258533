"""Recognising referral resources: fulfil Tasks, their focus, placer identifiers; pure helpers
the intake and the write path share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from fhir_bridge.fhir.dates import parse_fhir_datetime_range
from fhir_bridge.fhir.outcome import Issue
from fhir_bridge.mapping.referral_rules import placer_identifier

TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
#: longest identifier system or value the store's uniqueness guard holds
CLAIM_MAX = 512


def is_fulfil_task(resource: Mapping[str, Any]) -> bool:
    """True for a Task asking its owner to fulfil a request (``code = task-code#fulfill``)."""
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and c.get("system") == TASK_CODE_SYSTEM and c.get("code") == "fulfill"
        for c in codings
    )


def focus_reference(task: Mapping[str, Any]) -> str | None:
    """The Task's ``focus.reference`` string, if any."""
    focus = task.get("focus")
    ref = focus.get("reference") if isinstance(focus, dict) else None
    return ref if isinstance(ref, str) else None


def placer_claim(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """(system, value) of a ServiceRequest's placer identifier, when it has a usable one."""
    placer = placer_identifier(dict(resource))
    if placer is None:
        return None
    system, value = str(placer["system"]), str(placer["value"])
    if len(system) > CLAIM_MAX or len(value) > CLAIM_MAX:
        return None
    return system, value


def reroot(issues: Sequence[Issue], root: str) -> list[Issue]:
    """Issues about ``ServiceRequest.x`` re-expressed under ``root`` (e.g. a Bundle entry)."""
    out = []
    for issue in issues:
        exprs = tuple(
            root + e.removeprefix("ServiceRequest") if e.startswith("ServiceRequest") else e
            for e in issue.expression
        )
        out.append(Issue(issue.severity, issue.code, issue.diagnostics, exprs))
    return out


def reference(node: Any) -> str | None:
    """A Reference's ``reference`` string, when it has a non-empty one."""
    ref = node.get("reference") if isinstance(node, dict) else None
    return ref if isinstance(ref, str) and ref else None


def authored(sr: Mapping[str, Any]) -> datetime | None:
    """``authoredOn`` as the start of its range (naive UTC), None when absent or bad."""
    raw = sr.get("authoredOn")
    if not isinstance(raw, str):
        return None
    try:
        low, _ = parse_fhir_datetime_range(raw)
    except ValueError:
        return None
    return low


def issue_json(issue: Issue) -> dict[str, Any]:
    """An Issue as the inbox row keeps it (JSON)."""
    return {
        "severity": issue.severity,
        "code": issue.code,
        "diagnostics": issue.diagnostics,
        "expression": list(issue.expression),
    }
