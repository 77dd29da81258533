"""OperationOutcome: the one error model of every FHIR surface."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: issue-type codes (http://hl7.org/fhir/issue-type) the bridge may emit.
ISSUE_CODES = frozenset(
    {
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "forbidden",
        "processing",
        "not-supported",
        "duplicate",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    }
)
SEVERITIES = frozenset({"fatal", "error", "warning", "information"})


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: what is wrong, how bad, and where (FHIRPath expressions)."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown issue severity {self.severity!r}")
        if self.code not in ISSUE_CODES:
            raise ValueError(f"unknown issue type {self.code!r}")

    def to_fhir(self) -> dict[str, Any]:
        """The issue as a FHIR OperationOutcome.issue element."""
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def error(code: str, diagnostics: str, *expression: str) -> Issue:
    """Shorthand for an error-severity issue."""
    return Issue("error", code, diagnostics, tuple(expression))


def warning(code: str, diagnostics: str, *expression: str) -> Issue:
    """Shorthand for a warning-severity issue."""
    return Issue("warning", code, diagnostics, tuple(expression))


class FhirError(Exception):
    """A request the bridge refuses; rendered as an OperationOutcome with ``status``."""

    def __init__(self, status: int, issues: Sequence[Issue] | Issue) -> None:
        self.status = status
        self.issues: list[Issue] = [issues] if isinstance(issues, Issue) else list(issues)
        if not self.issues:
            raise ValueError("FhirError needs at least one issue")
        super().__init__("; ".join(i.diagnostics for i in self.issues))


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """Build an OperationOutcome resource (a plain dict) from issues."""
    rendered = [i.to_fhir() for i in issues]
    if not rendered:
        rendered = [Issue("information", "informational", "All OK").to_fhir()]
    return {"resourceType": "OperationOutcome", "issue": rendered}
