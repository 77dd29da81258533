"""Problems found in an inbound session record, and their rendering as a FHIR OperationOutcome.

The internal API answers 422 with ``to_operation_outcome(exc.problems)`` for a ``RecordInvalid``.
A Problem never echoes PHI: the schema leaves ``value`` as None for patient fields, notes and
dates (see ``schemas.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: issue-type codes (http://hl7.org/fhir/issue-type) a Problem may carry.
PROBLEM_CODES = frozenset({"invalid", "required", "value", "code-invalid"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a record: where (JSON path such as ``treatments[2].minutes``) and why.

    ``value`` is the offending value when it is safe to echo (never PHI); ``allowed`` lists the
    accepted values when there is a closed set (vocabulary keys, enumerations).
    ``code`` is the FHIR issue type: invalid (wrong JSON type or shape), required, value
    (out of range, inconsistent) or code-invalid (not in a code system or vocabulary).
    """

    path: str
    message: str
    value: object | None = None
    allowed: tuple[str, ...] | list | None = None
    code: str = "invalid"

    def __post_init__(self) -> None:
        if self.code not in PROBLEM_CODES:
            raise ValueError(f"unknown problem code {self.code!r}")
        if not self.path:
            raise ValueError("a Problem needs a path")

    def diagnostics(self) -> str:
        """The message, followed by the allowed values when there is a closed set."""
        if not self.allowed:
            return self.message
        return f"{self.message}; allowed: {', '.join(str(a) for a in self.allowed)}"


class RecordInvalid(Exception):
    """A session record that cannot be accepted; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        if not self.problems:
            raise ValueError("RecordInvalid needs at least one problem")
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first.path}: {first.message}{more}")


def to_operation_outcome(problems: Iterable[Problem]) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome (plain dict): one error issue per problem, located by path."""
    issues = [
        {
            "severity": "error",
            "code": p.code,
            "diagnostics": p.diagnostics(),
            "expression": [p.path],
        }
        for p in problems
    ]
    if not issues:
        issues = [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]
    return {"resourceType": "OperationOutcome", "issue": issues}
