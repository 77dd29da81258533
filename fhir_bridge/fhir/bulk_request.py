"""Bulk Data Access IG 2.0.0 ``$export``: the kick-off parameters and the completion manifest.

Pure: parses a kick-off request's parameters into an ``ExportRequest`` (or a FhirError(400)
naming every bad parameter with its ``expression``) and renders the manifest. The service
decides what the caller may see; this module only knows what was asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_bridge.fhir.dates import parse_fhir_datetime_range, to_instant
from fhir_bridge.fhir.outcome import FhirError, Issue, error
from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.search_query import RESULT_PARAMS, parse_search

#: ``_outputFormat`` values the IG says a server must accept (all mean NDJSON)
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
NDJSON = "application/fhir+ndjson"
#: kick-off parameters the bridge supports (``_format``/``_pretty`` are transport only)
SUPPORTED = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "_format", "_pretty"})
LEVELS = ("system", "patient", "group")
#: types exported at patient and group level: Patient and its compartment (not AuditEvent)
PATIENT_TYPES = (
    "Patient",
    *sorted(t for t, p in SEARCH_PARAMS.items() if "patient" in p and t != "AuditEvent"),
)
#: types a system export covers unless ``_type`` says otherwise (AuditEvent only on request)
SYSTEM_TYPES = tuple(sorted(t for t in SEARCH_PARAMS if t != "AuditEvent"))


@dataclass(frozen=True)
class ExportRequest:
    """What one kick-off asked for: level (system | patient | group), the Group's id, the
    types (None: every type of the level), ``_since`` (naive UTC) and ``_typeFilter`` queries
    per type (OR-ed; each a query string the bridge's search parses)."""

    level: str
    group_id: str | None = None
    types: tuple[str, ...] | None = None
    since: datetime | None = None
    type_filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def level_types(self) -> tuple[str, ...]:
        """Every type the level can export."""
        return SYSTEM_TYPES if self.level == "system" else PATIENT_TYPES

    def export_types(self) -> tuple[str, ...]:
        """The types to export, in order."""
        return self.types if self.types is not None else self.level_types()

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (stored with the job)."""
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        data["type_filters"] = {k: list(v) for k, v in self.type_filters.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportRequest:
        """The inverse of ``to_json``."""
        return cls(
            level=data["level"],
            group_id=data.get("group_id"),
            types=tuple(data["types"]) if data.get("types") is not None else None,
            since=datetime.fromisoformat(data["since"]) if data.get("since") else None,
            type_filters={k: tuple(v) for k, v in (data.get("type_filters") or {}).items()},
        )


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_export(
    level: str,
    params: Sequence[tuple[str, str]],
    *,
    group_id: str | None = None,
    lenient: bool = False,
) -> ExportRequest:
    """Validate kick-off parameters; FhirError(400) listing every problem (with expression)."""
    problems: list[Issue] = []
    types: list[str] | None = None
    since = None
    filters: dict[str, list[str]] = {}
    allowed = set(SYSTEM_TYPES if level == "system" else PATIENT_TYPES) | (
        {"AuditEvent"} if level == "system" else set()
    )
    for name, value in params:
        if name not in SUPPORTED:
            if not lenient:
                problems.append(
                    error("not-supported", f"Parameter {name[:64]} is not supported", name[:64])
                )
        elif name == "_outputFormat" and value not in OUTPUT_FORMATS:
            problems.append(
                error(
                    "not-supported",
                    f"_outputFormat must be one of {', '.join(sorted(OUTPUT_FORMATS))}",
                    "_outputFormat",
                )
            )
        elif name == "_since":
            since = _since(value, problems)
        elif name == "_type":
            for rtype in _split(value):
                if rtype not in allowed:
                    problems.append(_bad_type(rtype, level, "_type"))
                else:
                    types = (types or []) + [rtype]
        elif name == "_typeFilter":
            for query in _split(value):
                _type_filter(query, allowed, filters, problems)
    if problems:
        raise FhirError(400, problems)
    if types is not None:
        types = list(dict.fromkeys(types))
        for rtype in filters:
            if rtype not in types:
                problems.append(
                    error(
                        "invalid",
                        f"_typeFilter names {rtype}, which _type does not include",
                        "_typeFilter",
                    )
                )
        if problems:
            raise FhirError(400, problems)
    return ExportRequest(
        level=level,
        group_id=group_id,
        types=tuple(types) if types is not None else None,
        since=since,
        type_filters={k: tuple(v) for k, v in filters.items()},
    )


def _since(value: str, problems: list[Issue]) -> datetime | None:
    try:
        low, _high = parse_fhir_datetime_range(value)
    except ValueError:
        problems.append(error("invalid", f"_since={value[:40]!r} is not a FHIR instant", "_since"))
        return None
    if "T" not in value:
        problems.append(error("invalid", "_since must be an instant (with a time)", "_since"))
        return None
    return low


def _bad_type(rtype: str, level: str, expression: str) -> Issue:
    return error(
        "not-supported",
        f"Resource type {rtype[:64]} is not exported by a {level}-level $export",
        expression,
    )


def _type_filter(
    query: str, allowed: set[str], filters: dict[str, list[str]], problems: list[Issue]
) -> None:
    rtype, sep, qs = query.partition("?")
    if not sep or rtype not in allowed:
        problems.append(
            _bad_type(rtype, "this", "_typeFilter")
            if sep
            else error("invalid", "A _typeFilter is Type?search-parameters", "_typeFilter")
        )
        return
    pairs = parse_qsl(qs, keep_blank_values=True)
    if not pairs or any(k in RESULT_PARAMS for k, _ in pairs):
        problems.append(
            error(
                "invalid",
                f"A _typeFilter for {rtype} needs search criteria and no result parameters",
                "_typeFilter",
            )
        )
        return
    try:
        parse_search(rtype, pairs)
    except FhirError as exc:
        for issue in exc.issues:
            problems.append(
                error(
                    issue.code,
                    f"_typeFilter {rtype}: {issue.diagnostics}",
                    "_typeFilter",
                )
            )
        return
    filters.setdefault(rtype, []).append(qs)


def parameters_pairs(body: Any) -> list[tuple[str, str]]:
    """The (name, value) pairs of a POST kick-off's Parameters resource; 400 when it is not
    one, or a parameter carries no value the bridge understands."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, error("invalid", "A POST $export takes a Parameters resource", "body"))
    pairs = []
    for i, param in enumerate(body.get("parameter") or []):
        name = param.get("name") if isinstance(param, dict) else None
        value = None
        if isinstance(param, dict):
            for key in ("valueString", "valueInstant", "valueCode", "valueDateTime"):
                if isinstance(param.get(key), str):
                    value = param[key]
        if not isinstance(name, str) or value is None:
            raise FhirError(
                400,
                error(
                    "invalid",
                    "Each parameter needs a name and a string, code or instant value",
                    f"Parameters.parameter[{i}]",
                ),
            )
        pairs.append((name, value))
    return pairs


@dataclass(frozen=True)
class ManifestFile:
    """One file of a completed export."""

    kind: str
    resource_type: str
    url: str
    count: int


def manifest(
    *,
    transaction_time: datetime,
    request_url: str,
    files: Iterable[ManifestFile],
) -> dict[str, Any]:
    """The completion manifest (IG 2.0.0, "Response - Complete Status")."""
    files = list(files)
    return {
        "transactionTime": to_instant(transaction_time),
        "request": request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": f.resource_type, "url": f.url, "count": f.count}
            for f in files
            if f.kind == "output"
        ],
        "error": [
            {"type": "OperationOutcome", "url": f.url, "count": f.count}
            for f in files
            if f.kind == "error"
        ],
    }
