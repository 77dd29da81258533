"""Small pure formatters the templates use (registered as Jinja filters)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from flask import Blueprint


def patient_name(patient: dict[str, Any] | None) -> str:
    """``Family, Given`` from the first official (else first) HumanName."""
    if not patient:
        return "Unknown patient"
    names = patient.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if not chosen:
        return "Unnamed patient"
    family = chosen.get("family", "")
    given = " ".join(chosen.get("given", []))
    text = ", ".join(p for p in (family, given) if p)
    return text or chosen.get("text") or "Unnamed patient"


def when(value: datetime | date | str | None) -> str:
    """A stored date-time as ``2026-11-12 17:30 UTC``, a date as ``2026-11-12``; FHIR text
    (with its own offset) as written."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value.replace("T", " ")[:16]
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def concept(value: dict[str, Any] | None) -> str:
    """A CodeableConcept's text, else its first display, else ``system|code``."""
    if not value:
        return "-"
    if value.get("text"):
        return str(value["text"])
    for coding in value.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
    codes = [f"{c.get('code')}" for c in value.get("coding", [])]
    return ", ".join(codes) or "-"


STATUS_CLASSES = {
    "requested": "info",
    "accepted": "ok",
    "in-progress": "ok",
    "completed": "muted",
    "rejected": "bad",
    "cancelled": "muted",
    "pending": "warn",
    "retry": "warn",
    "delivered": "ok",
    "dead": "bad",
}


def status_class(status: str | None) -> str:
    """CSS class of a status badge."""
    return STATUS_CLASSES.get(status or "", "muted")


def outcome_summary(outcome: Any, limit: int = 5) -> list[str]:
    """A partner's answer in a few lines: per OperationOutcome issue ``severity code:
    text (at expression)``; a non-FHIR answer as its first 200 characters."""
    if outcome is None or outcome == "":
        return []
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        text = outcome if isinstance(outcome, str) else str(outcome)
        return [text[:200] + ("…" if len(text) > 200 else "")]
    lines = []
    issues = [i for i in outcome.get("issue") or [] if isinstance(i, dict)]
    for issue in issues[:limit]:
        head = " ".join(str(issue[k]) for k in ("severity", "code") if issue.get(k))
        details = issue.get("details") if isinstance(issue.get("details"), dict) else None
        said = concept(details) if details else "-"
        said = issue.get("diagnostics") if said == "-" else said
        where = ", ".join(str(e) for e in issue.get("expression") or [])
        line = f"{head}: {said or '-'}" if head else str(said or "-")
        lines.append(line[:200] + (f" (at {where[:100]})" if where else ""))
    if len(issues) > limit:
        lines.append(f"and {len(issues) - limit} more")
    return lines or ["OperationOutcome without issues"]


def register(bp: Blueprint) -> None:
    """Make the formatters available to the console's templates."""
    for name, fn in {
        "patient_name": patient_name,
        "when": when,
        "concept": concept,
        "status_class": status_class,
    }.items():
        bp.add_app_template_filter(fn, name)


def indent_json(raw: str, step: str = "  ") -> str:
    """Re-indent JSON text for reading, every token kept as written (numbers, key order, escapes).

    Whitespace outside strings is replaced; nothing is parsed, so ``1.50`` stays ``1.50``.
    """
    out: list[str] = []
    depth, in_string, escaped = 0, False, False
    chars = raw.strip()
    for i, ch in enumerate(chars):
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch.isspace():
            continue
        if ch == '"':
            in_string = True
            out.append(ch)
        elif ch in "{[":
            closing = "}" if ch == "{" else "]"
            rest = chars[i + 1 :].lstrip()
            if rest.startswith(closing):
                out.append(ch)  # an empty object or array stays on one line
            else:
                depth += 1
                out.append(ch + "\n" + step * depth)
        elif ch in "}]":
            if out and out[-1] in "{[":
                out.append(ch)
            else:
                depth -= 1
                out.append("\n" + step * depth + ch)
        elif ch == ",":
            out.append(",\n" + step * depth)
        elif ch == ":":
            out.append(": ")
        else:
            out.append(ch)
    return "".join(out)
