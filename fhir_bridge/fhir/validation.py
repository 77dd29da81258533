"""Validate one inbound FHIR R4 resource (a parsed JSON dict) and report OperationOutcome issues.

Structure comes from the ``fhir.resources.R4B`` models (never the default R5 path); on top of
that we check what the library skips (libraries.md 1.4): required-binding status/intent codes,
reference target types, the 64-character id limit, empty elements and nulls, and required
primitives the library reports only when a model has no other error (libraries.md 1.5).
The caller's dict is never mutated and never round-tripped through the models.

Cost, measured with timeit on the bench_fhir_floor.py samples (libraries.md 2) on a machine
about 1.8x slower than that table's: Observation ``model_validate`` 220-230 us, the whole
``validate_resource`` 265-275 us (+15-20%; our own walk is ~29 us of it); the 11 KB transaction
Bundle 2.3 ms vs 2.6 ms (+12%). Scaled to libraries.md's machine: ~127 us -> ~150 us.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import ValidationError

from fhir_bridge.fhir.outcome import FhirError, Issue, error

__all__ = ["require_valid", "validate_resource"]

Model = type[FHIRAbstractModel]

#: FHIR ``id`` datatype (R4 datatypes.html#id): the library allows up to 255 characters.
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: a literal reference ``[base/]Type/id[/_history/vid]`` (R4 references.html#literal).
REFERENCE_RE = re.compile(
    r"(?:(?P<base>.+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)

_HL7_CS = "http://terminology.hl7.org/CodeSystem/"


@dataclass(frozen=True)
class Binding:
    """A required value-set binding: ``codes`` allowed; ``system`` set for a CodeableConcept."""

    value_set: str
    codes: tuple[str, ...]
    system: str | None = None


def _binding(value_set: str, codes: str, system: str | None = None) -> Binding:
    return Binding(value_set, tuple(codes.split()), system)


_REQUEST_STATUS = _binding(
    "request-status", "draft active on-hold revoked completed entered-in-error unknown"
)

#: required bindings the library does not enforce, per resource type and element path
#: (element names joined with ``.``, no indexes).
BINDINGS: dict[str, dict[str, Binding]] = {
    "ServiceRequest": {
        "status": _REQUEST_STATUS,
        "intent": _binding(
            "request-intent",
            "proposal plan directive order original-order reflex-order filler-order"
            " instance-order option",
        ),
    },
    "Task": {
        "status": _binding(
            "task-status",
            "draft requested received accepted rejected ready cancelled in-progress on-hold"
            " failed completed entered-in-error",
        ),
        "intent": _binding(
            "task-intent",
            "unknown proposal plan order original-order reflex-order filler-order"
            " instance-order option",
        ),
    },
    "Procedure": {
        "status": _binding(
            "event-status",
            "preparation in-progress not-done on-hold stopped completed entered-in-error unknown",
        ),
    },
    "Observation": {
        "status": _binding(
            "observation-status",
            "registered preliminary final amended corrected cancelled entered-in-error unknown",
        ),
    },
    "Condition": {
        "clinicalStatus": _binding(
            "condition-clinical",
            "active recurrence relapse inactive remission resolved",
            _HL7_CS + "condition-clinical",
        ),
        "verificationStatus": _binding(
            "condition-ver-status",
            "unconfirmed provisional differential confirmed refuted entered-in-error",
            _HL7_CS + "condition-ver-status",
        ),
    },
    "Coverage": {"status": _binding("fm-status", "active cancelled draft entered-in-error")},
    "Goal": {
        "lifecycleStatus": _binding(
            "goal-status",
            "proposed planned accepted active on-hold completed cancelled entered-in-error"
            " rejected",
        ),
    },
    "Patient": {"gender": _binding("administrative-gender", "male female other unknown")},
    "Bundle": {
        "type": _binding(
            "bundle-type",
            "document message transaction transaction-response batch batch-response history"
            " searchset collection",
        ),
        "entry.request.method": _binding("http-verb", "GET HEAD POST PUT DELETE PATCH"),
    },
}

_PERFORMERS = (
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "CareTeam",
    "HealthcareService",
    "Patient",
    "Device",
    "RelatedPerson",
)
_REQUESTERS = (
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Patient",
    "RelatedPerson",
    "Device",
)

#: allowed reference targets in FHIR R4 (not R4B), per resource type and element path;
#: ``None`` means Reference(Any): the type segment must only name a resource type.
REFERENCE_TARGETS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "Observation": {
        "subject": ("Patient", "Group", "Device", "Location"),
        "encounter": ("Encounter",),
        "performer": (
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "CareTeam",
            "Patient",
            "RelatedPerson",
        ),
    },
    "ServiceRequest": {
        "subject": ("Patient", "Group", "Location", "Device"),
        "encounter": ("Encounter",),
        "requester": _REQUESTERS,
        "performer": _PERFORMERS,
        "basedOn": ("CarePlan", "ServiceRequest", "MedicationRequest"),
    },
    "Procedure": {
        "subject": ("Patient", "Group"),
        "encounter": ("Encounter",),
        "basedOn": ("CarePlan", "ServiceRequest"),
        "performer.actor": _REQUESTERS,
        "reasonReference": (
            "Condition",
            "Observation",
            "Procedure",
            "DiagnosticReport",
            "DocumentReference",
        ),
    },
    "Task": {
        "focus": None,
        "for": None,
        "owner": _PERFORMERS,
        "requester": _REQUESTERS,
    },
    "Coverage": {
        "beneficiary": ("Patient",),
        "payor": ("Organization", "Patient", "RelatedPerson"),
        "policyHolder": ("Patient", "RelatedPerson", "Organization"),
        "subscriber": ("Patient", "RelatedPerson"),
    },
    "Condition": {"subject": ("Patient", "Group"), "encounter": ("Encounter",)},
    "Goal": {"subject": ("Patient", "Group", "Organization")},
}

#: issue code per pydantic error type; anything not listed is ``value``.
_ERROR_CODES = {
    "missing": "required",
    "model_field_validation.missing": "required",
    "extra_forbidden": "structure",
    "list_type": "structure",
    "dict_type": "structure",
    "model_type": "structure",
    "model_attributes_type": "structure",
    "json_invalid": "structure",
    "json_type": "structure",
    "model_validation_format": "invalid",
}
#: messages rewritten because pydantic's wording misleads (it is not parsing JSON text there).
_REWORDED = {"json_invalid": "expected a JSON object", "json_type": "expected a JSON object"}

_DROP = object()
# A stand-in for a nested resource whose resourceType we already reported: fhir_core raises
# KeyError (not ValidationError) on an unknown nested resourceType.
_PLACEHOLDER = {"resourceType": "Basic", "code": {"text": "placeholder"}}


# --- model schema (cached per class) -------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """What the walker needs to know about one JSON property of a model."""

    model: Model | None  # complex type, or None for a primitive
    many: bool  # a JSON array
    resource: bool  # holds a resource (contained, Bundle.entry.resource, ...)
    partner: str | None  # the ``_name`` / ``name`` sibling of a primitive


@dataclass(frozen=True)
class _Schema:
    fields: dict[str, _Field]
    required: tuple[str, ...]  # required primitives (checked by the library only sometimes)
    choices: tuple[tuple[str, tuple[str, ...]], ...]  # required value[x]: (prefix, aliases)


def _inner_type(annotation: Any) -> Any:
    """Strip Optional / List / Annotated down to the element type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin is None:
            return annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if not args:
            return annotation
        annotation = args[0]


def _is_array(annotation: Any) -> bool:
    """Whether a field annotation is (an Optional of) a List."""
    if typing.get_origin(annotation) is list:
        return True
    if typing.get_origin(annotation) is typing.Annotated:
        return False
    return any(_is_array(a) for a in typing.get_args(annotation))


@cache
def _schema(cls: Model) -> _Schema:
    fields: dict[str, _Field] = {}
    required: list[str] = []
    choices: dict[str, list[str]] = {}
    resource_base = get_fhir_model_class("Resource")
    for name, info in cls.model_fields.items():
        alias = info.alias or name
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        inner = _inner_type(info.annotation)
        model = inner.get_model_klass() if hasattr(inner, "get_model_klass") else None
        if name.endswith("__ext"):
            partner = alias[1:]
        elif model is None:
            partner = "_" + alias
        else:
            partner = None
        many = _is_array(info.annotation)
        fields[alias] = _Field(model, many, model is resource_base, partner)
        if extra.get("element_required") and model is None:
            required.append(alias)
        if extra.get("one_of_many_required"):
            choices.setdefault(str(extra["one_of_many"]), []).append(alias)
    return _Schema(fields, tuple(required), tuple((p, tuple(a)) for p, a in choices.items()))


@cache
def _resource_class(resource_type: str) -> Model | None:
    """The R4B model of a concrete resource type, or None (unknown, datatype, abstract)."""
    try:
        cls = get_fhir_model_class(resource_type)
    except (ValueError, TypeError):
        return None
    if not cls.has_resource_base() or cls.get_resource_type() != resource_type:
        return None
    if resource_type in ("Resource", "DomainResource"):
        return None
    return cls


@cache
def _model(name: str) -> Model:
    return get_fhir_model_class(name)


# --- our own walk over the original dict --------------------------------------------------------


#: an expression under construction: the root string, or (parent, JSON key | index |
#: ".ofType(T)"); rendered only when an issue needs it, which keeps the walk cheap.
Path = str | tuple[Any, str | int]


def _render(path: Path) -> str:
    parts: list[str] = []
    while isinstance(path, tuple):
        path, segment = path
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif segment.startswith("."):
            parts.append(segment)
        else:
            parts.append("." + segment.removeprefix("_"))
    parts.append(path)
    return "".join(reversed(parts))


@dataclass(frozen=True)
class _Rules:
    """The tables of one resource type, keyed by element path without indexes."""

    bindings: dict[str, Binding]
    references: dict[str, tuple[str, ...] | None]
    prefixes: frozenset[str]  # every path on the way to a table entry


@cache
def _rules(rtype: str) -> _Rules:
    bindings = BINDINGS.get(rtype, {})
    references = REFERENCE_TARGETS.get(rtype, {})
    prefixes = set()
    for rel in (*bindings, *references):
        parts = rel.split(".")
        prefixes.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return _Rules(bindings, references, frozenset(prefixes))


class _Walk:
    """State of one walk: issues found, plus what to change in the copy handed to the model."""

    def __init__(self, base: str | None) -> None:
        self.base = base.rstrip("/") + "/" if base else None
        self.issues: list[Issue] = []
        self.strip: dict[int, list[str]] = {}  # id(Extension dict) -> keys to drop
        # (id(container), key) -> stand-in in the model's copy (_DROP: leave out / null)
        self.replace: dict[tuple[int, str | int], Any] = {}
        self.extras: list[tuple[str, Any, Model]] = []  # (expression, value, model) checked apart

    def add(self, code: str, path: Path, text: str) -> None:
        expression = _render(path)
        self.issues.append(error(code, f"{expression}: {text}", expression))


def _check_resource(w: _Walk, node: dict[str, Any], path: Path) -> None:
    """Walk one resource (root, contained, or nested in a Bundle / Parameters)."""
    rtype = node["resourceType"]
    _walk_object(w, node, _resource_class(rtype), _rules(rtype), "", path)


def _walk_object(
    w: _Walk,
    node: dict[str, Any],
    cls: Model | None,
    rules: _Rules,
    rel: str | None,
    path: Path,
) -> None:
    """Check each property of one JSON object; ``rel`` is None once no table applies below."""
    fields = _schema(cls).fields if cls is not None else {}
    if "fhir_comments" in node:  # the models accept it, FHIR R4 JSON does not
        w.add("structure", (path, "fhir_comments"), "fhir_comments is not part of FHIR R4 JSON")
    for key, value in node.items():
        kind = type(value)
        if kind is str and rel is None and key != "id":
            if not value.strip():  # the common case, kept inline: a plain string
                w.add("value", (path, key), _EMPTY_STRING)
            elif _CONTROL.search(value):
                w.add("value", (path, key), _CONTROL_TEXT)
            continue
        if kind in _SCALARS or (rel == "" and key == "resourceType"):
            continue
        field = fields.get(key)
        child_path = (path, key)
        child_rel = None
        if rel is not None:
            child_rel = f"{rel}.{key}" if rel else key
            if child_rel not in rules.prefixes:
                child_rel = None
        if value is None:
            w.add("structure", child_path, "null is not allowed; omit the element instead")
        elif type(value) is list:
            if field is not None and field.model is None and not field.many:
                w.add("structure", child_path, "expected a single primitive value, not an array")
                w.replace[(id(node), key)] = _DROP
            else:
                _walk_list(w, node, key, value, field, rules, child_rel, child_path)
        else:
            _walk_value(w, node, key, value, field, rules, child_rel, child_path)


_EMPTY_STRING = "empty or whitespace-only string is not allowed"
#: FHIR R4 strings: no characters below U+0020 except tab, carriage return and line feed
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CONTROL_TEXT = "control characters (below U+0020, other than tab, CR and LF) are not allowed"
_SCALARS = frozenset({bool, int, float, Decimal})


def _walk_list(
    w: _Walk,
    parent: dict[str, Any],
    key: str,
    items: list[Any],
    field: _Field | None,
    rules: _Rules,
    rel: str | None,
    path: Path,
) -> None:
    if not items:
        w.add("structure", path, "empty array is not allowed; omit the element instead")
        return
    partner = parent.get(field.partner) if field is not None and field.partner else None
    for i, item in enumerate(items):
        if item is None:
            # a null in a primitive array only keeps a value aligned with its _name sibling
            aligned = isinstance(partner, list) and len(partner) == len(items)
            if not (aligned and partner[i] is not None):  # type: ignore[index]
                w.add("structure", (path, i), "null is not allowed here")
        else:
            _walk_value(w, items, i, item, field, rules, rel, (path, i))


def _walk_value(
    w: _Walk,
    container: Any,
    key: str | int,
    value: Any,
    field: _Field | None,
    rules: _Rules,
    rel: str | None,
    path: Path,
) -> None:
    if type(value) is str:
        _check_string(w, key, value, rules, rel, path)
    elif isinstance(value, dict | list) and field is not None and field.model is None:
        # fhir_core raises TypeError (not ValidationError) on a dict or array given for a uri
        w.add("structure", path, "expected a primitive value, not an object or array")
        w.replace[(id(container), key)] = _DROP
    elif isinstance(value, dict):
        if not value:
            w.add("structure", path, "empty object is not allowed; omit the element instead")
        elif field is not None and field.resource:
            _walk_nested_resource(w, container, key, value, path)
        else:
            _check_complex(w, value, field, rules, rel, path)


def _check_string(
    w: _Walk, key: str | int, value: str, rules: _Rules, rel: str | None, path: Path
) -> None:
    if not value.strip():
        w.add("value", path, _EMPTY_STRING)
    elif _CONTROL.search(value):
        w.add("value", path, _CONTROL_TEXT)
    elif key == "id" and not ID_RE.fullmatch(value):
        w.add("value", path, "an id is 1-64 characters of A-Z, a-z, 0-9, '-' and '.'")
    elif rel is not None:
        binding = rules.bindings.get(rel)
        if binding is not None and binding.system is None and value not in binding.codes:
            _bad_code(w, binding, path)


def _bad_code(w: _Walk, binding: Binding, path: Path) -> None:
    allowed = ", ".join(binding.codes)
    w.add("code-invalid", path, f"code is not in value set {binding.value_set} ({allowed})")


def _check_complex(
    w: _Walk,
    value: dict[str, Any],
    field: _Field | None,
    rules: _Rules,
    rel: str | None,
    path: Path,
) -> None:
    model = field.model if field is not None else None
    if model is _model("Extension"):
        _note_extension_extras(w, value, path)
    if rel is not None:
        if rel in rules.references:
            _check_reference(w, value, rules.references[rel], path)
        binding = rules.bindings.get(rel)
        if binding is not None and binding.system is not None:
            _check_coding(w, value, binding, path)
    _walk_object(w, value, model, rules, rel, path)


def _note_extension_extras(w: _Walk, ext: dict[str, Any], path: Path) -> None:
    # Valid R4 the library rejects, so validated apart and hidden from the model:
    # - ``_valueX`` primitive extension on Extension.value[x] (fhir.resources #204, open);
    # - ``valueMeta``: an R4 Extension.value[x] type that R4B dropped (libraries.md 1.2).
    for key, value in ext.items():
        if key.startswith("_value"):
            model = _model("FHIRPrimitiveExtension")
        elif key == "valueMeta":
            model = _model("Meta")
        else:
            continue
        w.strip.setdefault(id(ext), []).append(key)
        if isinstance(value, dict):
            w.extras.append((_render((path, key)), value, model))


def _check_reference(
    w: _Walk, ref: dict[str, Any], allowed: tuple[str, ...] | None, path: Path
) -> None:
    literal = ref.get("reference")
    if not isinstance(literal, str) or literal.startswith(("#", "urn:")):
        return
    if w.base is not None and literal.startswith(w.base):
        match = REFERENCE_RE.fullmatch(literal[len(w.base) :])
        if match is None or match.group("base"):
            w.add("value", path, "reference to this server must be Type/id[/_history/vid]")
            return
    else:
        match = REFERENCE_RE.fullmatch(literal)
    if match is None:
        return  # conditional or non-FHIR URL: not a literal Type/id reference
    target = match.group("type")
    if _resource_class(target) is None:
        if match.group("base") is None:
            w.add("value", path, "reference does not name a FHIR resource type")
        return
    if allowed is not None and target not in allowed:
        names = ", ".join(allowed)
        w.add("invalid", path, f"a reference to {target} is not allowed here (allowed: {names})")


def _check_coding(w: _Walk, concept: dict[str, Any], binding: Binding, path: Path) -> None:
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return
    for i, coding in enumerate(codings):
        if not isinstance(coding, dict) or coding.get("system") != binding.system:
            continue
        code = coding.get("code")
        if isinstance(code, str) and code.strip() and code not in binding.codes:
            _bad_code(w, binding, (((path, "coding"), i), "code"))


def _walk_nested_resource(
    w: _Walk, container: Any, key: str | int, node: dict[str, Any], path: Path
) -> None:
    rtype = node.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        w.add("required", (path, "resourceType"), "resourceType is required")
    elif _resource_class(rtype) is None:
        w.add("not-supported", (path, "resourceType"), "not a known FHIR R4 resource type")
    else:
        _check_resource(w, node, (path, f".ofType({rtype})"))
        return
    w.replace[(id(container), key)] = _PLACEHOLDER


# --- the copy handed to the model ----------------------------------------------------------------


def _model_input(node: Any, w: _Walk) -> Any:
    """Copy ``node`` with the walk's edits applied (only called when there are edits)."""
    if isinstance(node, dict):
        drop = w.strip.get(id(node), ())
        out = {}
        for k, v in node.items():
            new = w.replace.get((id(node), k), v)
            if k not in drop and new is not _DROP:
                out[k] = _model_input(new, w) if new is v else new
        return out
    if isinstance(node, list):
        items = [w.replace.get((id(node), i), v) for i, v in enumerate(node)]
        return [
            None if new is _DROP else _model_input(new, w) if new is old else new
            for new, old in zip(items, node, strict=True)
        ]
    return node


# --- pydantic errors -> issues ---------------------------------------------------------------


def _loc_expression(path: str, data: Any, cls: Model | None, loc: Iterable[Any]) -> str:
    """FHIRPath for a pydantic ``loc`` walked over ``data`` (``.ofType()`` after resources)."""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            data = data[part] if isinstance(data, list) and part < len(data) else None
        else:
            part = str(part)
            field = _schema(cls).fields.get(part) if cls is not None else None
            path += "." + (part[1:] if part.startswith("_") else part)
            data = data.get(part) if isinstance(data, dict) else None
            cls = field.model if field is not None else None
            resource = field is not None and field.resource
            if resource and isinstance(data, list):
                continue  # contained[i]: ofType after the index
        if isinstance(data, dict) and cls is _model("Resource"):
            rtype = data.get("resourceType")
            cls = _resource_class(rtype) if isinstance(rtype, str) else None
            if cls is not None:
                path += f".ofType({rtype})"
    return path


def _choice_prefix(names: list[str]) -> str:
    """``valueString``, ``valueSampledData`` -> ``value``."""
    shortest = min(names, key=len)
    for end in range(len(shortest), 0, -1):
        if all(n.startswith(shortest[:end]) and n[end : end + 1].isupper() for n in names):
            return shortest[:end]
    return shortest


_CHOICE_RE = re.compile(r"\[([^\]]*)\]")
_MISSING = "required element is missing"


def _error_issue(err: Any, path: str, data: Any, cls: Model | None) -> Issue | None:
    kind = str(err["type"])
    msg = str(err["msg"]).splitlines()[0].removeprefix("Value error, ")
    if kind == "list_type" and msg.startswith("None is not allowed"):
        return None  # our walk reports the exact index
    expression = _loc_expression(path, data, cls, err["loc"])
    code = _ERROR_CODES.get(kind, "value")
    choice = _CHOICE_RE.search(msg) if kind == "value_error" else None
    if choice is not None and "but got multiple" in msg:
        names = [n.strip().strip("'\"") for n in choice.group(1).split(",")]
        msg = f"only one {_choice_prefix(names)}[x] element may be present"
    elif choice is not None and msg.startswith("Expect any of"):
        names = [n.strip().strip("'\"") for n in choice.group(1).split(",")]
        return _required(f"{expression}.{_choice_prefix(names)}")
    elif code == "required":
        msg = _MISSING
    elif kind == "extra_forbidden":
        msg = "unknown element (not in FHIR R4 for this type)"
    else:
        msg = _REWORDED.get(kind, msg)
    value = err.get("input")
    if isinstance(value, str) and len(value) > 2 and value in msg:
        msg = "invalid value"  # never echo the value: it may be PHI
    return error(code, f"{expression}: {msg}", expression)


def _model_issues(exc: ValidationError, path: str, data: Any, cls: Model) -> list[Issue]:
    found = (_error_issue(err, path, data, cls) for err in exc.errors())
    return [i for i in found if i is not None]


def _required(expression: str) -> Issue:
    return error("required", f"{expression}: {_MISSING}", expression)


def _missing_required(node: Any, cls: Model | None, path: str, out: list[Issue]) -> None:
    """Required primitives and value[x] the library skips once a model has field errors."""
    if not isinstance(node, dict) or cls is None:
        return
    schema = _schema(cls)
    for alias in schema.required:
        ext = node.get("_" + alias)
        if node.get(alias) is None and not (isinstance(ext, dict) and ext.get("extension")):
            out.append(_required(f"{path}.{alias}"))
    for prefix, aliases in schema.choices:
        if not any(a in node or "_" + a in node for a in aliases):
            out.append(_required(f"{path}.{prefix}"))
    for key, value in node.items():
        field = schema.fields.get(key)
        if field is None or field.model is None or key.startswith("_"):
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            child = f"{path}.{key}[{i}]" if isinstance(value, list) else f"{path}.{key}"
            if field.resource and isinstance(item, dict):
                rtype = item.get("resourceType")
                sub = _resource_class(rtype) if isinstance(rtype, str) else None
                _missing_required(item, sub, f"{child}.ofType({rtype})", out)
            else:
                _missing_required(item, field.model, child, out)


def _validate_model(data: dict[str, Any], cls: Model, path: str) -> list[Issue]:
    """Issues from ``cls.model_validate(data)``, with FHIRPath expressions rooted at ``path``."""
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        issues = _model_issues(exc, path, data, cls)
        _missing_required(data, cls, path, issues)
        return issues
    except (TypeError, KeyError, AttributeError, ValueError):
        # fhir_core crashes on some malformed input instead of raising ValidationError;
        # the cases we know are pre-empted by the walk, this is the safety net.
        return [error("structure", f"{path}: malformed content, could not be validated", path)]
    return []


# --- public API ------------------------------------------------------------------------------


def _dedupe(issues: Iterable[Issue]) -> list[Issue]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for issue in issues:
        key = (issue.code, issue.expression)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def _root_issue(resource: object, expected_type: str | None) -> Issue | None:
    if not isinstance(resource, dict):
        return error("structure", "a FHIR resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return error("required", "resourceType is required", "resourceType")
    if _resource_class(rtype) is None:
        return error(
            "not-supported", "resourceType is not a known FHIR R4 resource type", "resourceType"
        )
    if expected_type is not None and rtype != expected_type:
        return error(
            "invalid", f"resourceType must be {expected_type}, not {rtype}", "resourceType"
        )
    return None


def validate_resource(
    resource: object, *, expected_type: str | None = None, base: str | None = None
) -> list[Issue]:
    """Every problem with ``resource`` (a parsed JSON value) as OperationOutcome issues.

    ``expected_type`` is the resourceType the caller requires (e.g. from the URL). ``base`` is
    this server's base URL: absolute references under it must be ``Type/id[/_history/vid]``.
    An empty list means valid. The input is never modified.
    """
    root_issue = _root_issue(resource, expected_type)
    if root_issue is not None:
        return [root_issue]
    resource = typing.cast(dict[str, Any], resource)
    rtype: str = resource["resourceType"]
    cls = typing.cast(Model, _resource_class(rtype))
    walk = _Walk(base)
    _check_resource(walk, resource, rtype)
    data = _model_input(resource, walk) if walk.strip or walk.replace else resource
    issues = walk.issues + _validate_model(data, cls, rtype)
    for path, value, model in walk.extras:
        issues += _validate_model(value, model, path)
    return _dedupe(issues)


def require_valid(resource: object, *, expected_type: str | None = None, status: int = 422) -> None:
    """Raise ``FhirError(status, issues)`` when ``resource`` has any error-severity issue."""
    issues = validate_resource(resource, expected_type=expected_type)
    if any(i.severity in ("error", "fatal") for i in issues):
        raise FhirError(status, issues)
