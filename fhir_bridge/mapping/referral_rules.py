"""Is an inbound prescription usable? The rules for a FHIR R4 ServiceRequest referral.

A physician's prescription for medical massage arrives as a ServiceRequest (bare, in a Bundle or
behind a Task; domain reference 2.2, 2.4). :func:`check_referral` judges it: errors (refuse)
and warnings (accept, staff follow up). Pure: no I/O, no clock (``facts.today``), no database;
the caller resolves what it can (the requester, a Coverage on file) into :class:`ReferralFacts`.

The ServiceRequest is untrusted JSON: any shape is judged and nothing raises. Every issue's
expression is a FHIRPath rooted at ``ServiceRequest`` (the caller re-roots it for a Bundle
entry). Diagnostics never carry patient data: no names, birth dates, the subject's reference,
the free text of ``code`` or the authored date. Codes and NPIs are named (they are not PHI).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from fhir_bridge.fhir.npi import NPI_SYSTEM, is_valid_npi
from fhir_bridge.fhir.outcome import Issue, error, warning
from fhir_bridge.mapping.icd10cm import is_billable, is_known, subcodes
from fhir_bridge.mapping.prescription import last_day
from fhir_bridge.mapping.tables import CPT, Code

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
INTENTS = ("order", "original-order", "filler-order")
REQUESTER_TYPES = ("Practitioner", "PractitionerRole")
#: a prescription authored longer ago than this is accepted with a warning
STALE_AFTER = timedelta(days=90)
ROOT = "ServiceRequest"

_OCCURRENCE = ("occurrenceDateTime", "occurrencePeriod", "occurrenceTiming")
_QUANTITY = ("quantityQuantity", "quantityRatio", "quantityRange")
# Type/id, optionally absolute (https://host/fhir/Type/id) and versioned (/_history/v)
_LITERAL_RE = re.compile(
    r"(?:https?://[^\s?#]+/)?(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_CONDITIONAL_RE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)\?\S*")  # Type?identifier=... (transaction)
_ECHO_LIMIT = 80
_SHOWN_CODINGS = 5


@dataclass(frozen=True)
class ReferralFacts:
    """What the caller knows beyond the ServiceRequest itself."""

    today: date
    #: the requester resource (Practitioner or PractitionerRole) when the caller could resolve
    #: it (contained, same Bundle, or on file)
    requester: dict[str, Any] | None = None
    #: when the requester is a PractitionerRole: its Practitioner, if resolvable
    requester_practitioner: dict[str, Any] | None = None
    #: a Coverage for the patient exists (on file or in the same Bundle)
    has_coverage: bool = False


def check_referral(sr: Any, facts: ReferralFacts, services: Sequence[Code]) -> list[Issue]:
    """Every problem of the referral ``sr``: errors refuse it, warnings accept it.

    ``services`` is the value set ``ServiceRequest.code`` is checked against
    (``MappingTables.referral_services``). An empty list means the referral is usable.
    """
    if not isinstance(sr, dict):
        return [error("structure", "a ServiceRequest must be a JSON object", ROOT)]
    return [
        *_check_intent(sr),
        *_check_status(sr),
        *_check_subject(sr),
        *_check_requester(sr, facts),
        *_check_code(sr, services),
        *_check_reasons(sr),
        *_check_placer(sr),
        *_check_amount(sr),
        *_check_insurance(sr, facts),
        *_check_age(sr, facts.today),
    ]


def placer_identifier(sr: Any) -> dict[str, Any] | None:
    """The placer (physician's) identifier: typed v2-0203#PLAC, with a system and a value."""
    if not isinstance(sr, dict):
        return None
    for identifier in _items(sr.get("identifier")):
        if (
            _is_placer(identifier)
            and _text(identifier.get("system"))
            and _text(identifier.get("value"))
        ):
            return identifier
    return None


# --- workflow: intent, status, placer identifier -------------------------------------------


def _check_intent(sr: dict[str, Any]) -> list[Issue]:
    intent = sr.get("intent")
    allowed = ", ".join(INTENTS)
    if intent is None:
        return [error("required", f"intent is required ({allowed})", f"{ROOT}.intent")]
    if intent in INTENTS:
        return []
    return [
        error(
            "value",
            f"intent {_show(intent)} is not accepted: a prescription is an order ({allowed})",
            f"{ROOT}.intent",
        )
    ]


def _check_status(sr: dict[str, Any]) -> list[Issue]:
    status = sr.get("status")
    if status is None:
        return [error("required", "status is required (active)", f"{ROOT}.status")]
    if status == "active":
        return []
    return [
        error(
            "value",
            f"status {_show(status)} is not accepted: only an active ServiceRequest can be treated",
            f"{ROOT}.status",
        )
    ]


def _check_placer(sr: dict[str, Any]) -> list[Issue]:
    if placer_identifier(sr) is not None:
        return []
    if any(_is_placer(identifier) for identifier in _items(sr.get("identifier"))):
        why = "the placer identifier (type v2-0203#PLAC) needs both a system and a value"
    else:
        why = (
            "the placer identifier is required: the prescription's id in the physician's "
            "system (type http://terminology.hl7.org/CodeSystem/v2-0203#PLAC, system, value)"
        )
    return [error("required", why, f"{ROOT}.identifier")]


def _is_placer(identifier: Any) -> bool:
    codings = _items(_obj(_obj(identifier).get("type")).get("coding"))
    return any(_obj(c).get("system") == V2_0203 and _obj(c).get("code") == "PLAC" for c in codings)


# --- references: subject and requester -----------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """What a Reference points at, as far as the ServiceRequest itself tells."""

    type: str | None = None  # the resource type named (None: not said)
    contained: dict[str, Any] | None = None  # the contained resource of a '#id' reference
    index: int | None = None  # its index in ServiceRequest.contained
    problem: str | None = None  # why the reference cannot be used


def _target(ref: dict[str, Any], sr: dict[str, Any]) -> _Target:
    """Resolve a Reference by its form: ``#id``, ``Type/id``, URL, ``Type?query``, identifier."""
    declared = _text(ref.get("type"))
    literal = ref.get("reference")
    if literal is None:
        if isinstance(ref.get("identifier"), dict):
            return _Target(declared)
        return _Target(problem="has neither a reference nor an identifier")
    if not isinstance(literal, str) or not literal.strip():
        return _Target(problem="reference must be a non-empty string")
    if literal.startswith("#"):
        return _contained(sr, literal[1:])
    match = _LITERAL_RE.fullmatch(literal) or _CONDITIONAL_RE.fullmatch(literal)
    if match is not None:
        return _Target(match["type"])
    if declared is not None:  # e.g. urn:uuid:... of a Bundle entry, with its type
        return _Target(declared)
    return _Target(
        problem="reference is not Type/id, #id or a URL ending in Type/id, and has no type"
    )


def _contained(sr: dict[str, Any], local_id: str) -> _Target:
    for index, resource in enumerate(_items(sr.get("contained"))):
        if isinstance(resource, dict) and resource.get("id") == local_id:
            return _Target(_resource_type(resource), resource, index)
    return _Target(problem="reference names no resource in ServiceRequest.contained")


def _check_subject(sr: dict[str, Any]) -> list[Issue]:
    where = f"{ROOT}.subject"
    subject = sr.get("subject")
    if not isinstance(subject, dict):
        return [_missing_or_misshaped(subject, "subject", "a reference to the Patient", where)]
    target = _target(subject, sr)
    if target.problem is not None:
        return [error("value", f"subject {target.problem}", where)]
    if target.type == "Patient" or (target.type is None and target.contained is None):
        return []  # an identifier-only reference need not say its type
    named = _show(target.type) if target.type else "a resource without resourceType"
    return [error("value", f"subject must be a Patient, not {named}", where)]


def _check_requester(sr: dict[str, Any], facts: ReferralFacts) -> list[Issue]:
    where = f"{ROOT}.requester"
    requester = sr.get("requester")
    if not isinstance(requester, dict):
        what = "a reference to the prescribing Practitioner or PractitionerRole (with an NPI)"
        return [_missing_or_misshaped(requester, "requester", what, where)]
    target = _target(requester, sr)
    resource_type = target.type or _resource_type(facts.requester)
    if resource_type is None and target.problem is not None:
        return [error("value", f"requester {target.problem}", where)]
    if resource_type is not None and resource_type not in REQUESTER_TYPES:
        return [
            error(
                "value",
                f"requester must be a Practitioner or PractitionerRole (the prescribing "
                f"physician), not {_show(resource_type)}",
                where,
            )
        ]
    is_role = resource_type == "PractitionerRole"
    return _check_npi(_npi_levels(sr, requester, target, facts, is_role=is_role))


# --- the requester's NPI -------------------------------------------------------------------

# (value, FHIRPath of the element holding it); the path is ServiceRequest.requester when the
# NPI is not in the ServiceRequest (a resolved resource on file or in the Bundle)
_Found = list[tuple[Any, str]]


def _check_npi(levels: Iterator[_Found]) -> list[Issue]:
    """The nearest NPIs found decide: each one must pass the check digit."""
    for found in levels:
        if found:
            return [
                error(
                    "value",
                    f"requester NPI {_show(value)} is not a valid NPI "
                    "(10 digits, the last one a check digit)",
                    path,
                )
                for value, path in found
                if not is_valid_npi(value)
            ]
    return [
        error(
            "required",
            f"the requester's NPI is required (identifier system {NPI_SYSTEM} on the "
            "requester reference, the Practitioner or the PractitionerRole's Practitioner)",
            f"{ROOT}.requester",
        )
    ]


def _npi_levels(
    sr: dict[str, Any],
    requester: dict[str, Any],
    target: _Target,
    facts: ReferralFacts,
    *,
    is_role: bool,
) -> Iterator[_Found]:
    """Where the NPI may be, nearest first: the reference, the requester, a role's Practitioner.

    A path of None means "not in the ServiceRequest" (a resource on file or in the Bundle).
    """
    yield _reference_npis(requester, f"{ROOT}.requester")
    if target.contained is not None:
        resource, path = target.contained, f"{ROOT}.contained[{target.index}]"
    else:
        resource, path = _obj(facts.requester), None
    yield _resource_npis(resource, path)
    if not is_role and _resource_type(resource) != "PractitionerRole":
        return
    practitioner = _obj(resource.get("practitioner"))
    yield _reference_npis(practitioner, f"{path}.practitioner" if path else None)
    if path is not None:  # a contained role points at a contained Practitioner as '#id'
        inner = _target(practitioner, sr)
        if inner.contained is not None:
            yield _resource_npis(inner.contained, f"{ROOT}.contained[{inner.index}]")
    yield _resource_npis(_obj(facts.requester_practitioner), None)


def _reference_npis(ref: dict[str, Any], path: str | None) -> _Found:
    identifier = _obj(ref.get("identifier"))
    if _npi_value(identifier) is None:
        return []
    return [(identifier["value"], f"{path}.identifier.value" if path else f"{ROOT}.requester")]


def _resource_npis(resource: dict[str, Any], path: str | None) -> _Found:
    return [
        (identifier["value"], f"{path}.identifier[{index}].value" if path else f"{ROOT}.requester")
        for index, identifier in enumerate(_items(resource.get("identifier")))
        if _npi_value(identifier) is not None
    ]


def _npi_value(identifier: Any) -> Any:
    """The value of an NPI identifier, else None."""
    identifier = _obj(identifier)
    return identifier.get("value") if identifier.get("system") == NPI_SYSTEM else None


# --- what is prescribed, and why -----------------------------------------------------------


def _check_code(sr: dict[str, Any], services: Sequence[Code]) -> list[Issue]:
    """The service prescribed must be one the clinic provides (issue 13).

    Codings decide: one from the value set accepts the order; codings that are all outside it
    refuse it, whatever ``code.text`` says (CPT 99213 "office visit, massage for the neck" is
    an order for an office visit). Only a code with no coding at all (text, or display-only
    codings) is left to staff, with a warning.
    """
    where = f"{ROOT}.code"
    allowed = ", ".join(f"{_system_label(s.system)} {s.code} ({s.display})" for s in services)
    code = sr.get("code")
    if not isinstance(code, dict):
        what = f"the service prescribed, a CodeableConcept; allowed: {allowed}"
        return [_missing_or_misshaped(code, "code", what, where)]
    codings = [c for c in map(_obj, _items(code.get("coding"))) if _is_coded(c)]
    listed = {(s.system, s.code) for s in services}
    if any(_coding_key(c) in listed for c in codings):
        return []
    if codings:
        return [
            error(
                "code-invalid",
                f"code {_codings_sent(codings)} is not in the massage/manual-therapy value set, "
                "so it orders a service the clinic does not provide (code.text is not read when "
                f"codes are sent); send a code from the value set: {allowed}",
                where,
            )
        ]
    if _text(code.get("text")) is not None:
        return [
            warning(
                "code-invalid",
                "code has text but no coding; staff must confirm the text is massage or manual "
                f"therapy (value set: {allowed})",
                where,
            )
        ]
    return [
        error(
            "code-invalid",
            f"code has no coding and no text; allowed: {allowed}",
            where,
        )
    ]


def _is_coded(coding: dict[str, Any]) -> bool:
    """A coding that names a code or a system (a display-only coding is text)."""
    return coding.get("code") is not None or coding.get("system") is not None


def _coding_key(coding: dict[str, Any]) -> tuple[str, str] | None:
    system, code = coding.get("system"), coding.get("code")
    return (system, code) if isinstance(system, str) and isinstance(code, str) else None


def _codings_sent(codings: list[dict[str, Any]]) -> str:
    shown = [
        f"{_show_plain(c.get('system'))}|{_show_plain(c.get('code'))}"
        for c in codings[:_SHOWN_CODINGS]
    ]
    more = len(codings) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _check_reasons(sr: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    billable = False
    for i, concept in enumerate(_items(sr.get("reasonCode"))):
        for j, coding in enumerate(_items(_obj(concept).get("coding"))):
            if _obj(coding).get("system") != ICD10CM:
                continue
            problem = _icd_problem(coding.get("code"))
            if problem is None:
                billable = True
            else:
                path = f"{ROOT}.reasonCode[{i}].coding[{j}].code"
                issues.append(error("code-invalid", problem, path))
    if not billable and not _has_condition_reason(sr):
        issues.append(
            error(
                "required",
                "the prescription needs an ICD-10-CM diagnosis (a billable reasonCode coding, "
                f"system {ICD10CM}) or a reasonReference to a Condition",
                f"{ROOT}.reasonCode",
            )
        )
    return issues


def _icd_problem(code: Any) -> str | None:
    """Why ``code`` is not a billable ICD-10-CM code, or None when it is."""
    if not isinstance(code, str) or not code.strip():
        return "an ICD-10-CM coding needs a code"
    if is_billable(code):
        return None
    if is_known(code):
        examples = ", ".join(subcodes(code)[:5])
        return (
            f"ICD-10-CM {_show_plain(code)} is a valid code but not billable (a header): "
            f"use one of its subcodes ({examples})"
        )
    fixed = code.strip().upper()
    if is_billable(fixed):
        return f"{_show(code)} is not an ICD-10-CM code as written: did you mean {fixed}?"
    return f"{_show(code)} is not an ICD-10-CM code"


def _has_condition_reason(sr: dict[str, Any]) -> bool:
    return any(
        _target(ref, sr).type == "Condition"
        for ref in _items(sr.get("reasonReference"))
        if isinstance(ref, dict)
    )


# --- warnings: amount, insurance, age ------------------------------------------------------


def _check_amount(sr: dict[str, Any]) -> list[Issue]:
    if any(sr.get(key) not in (None, "", [], {}) for key in _OCCURRENCE + _QUANTITY):
        return []
    return [
        warning(
            "incomplete",
            "how many visits, how often: not stated (no occurrence[x] or quantity[x]); "
            "staff must ask the prescriber",
            f"{ROOT}.occurrence",
        )
    ]


def _check_insurance(sr: dict[str, Any], facts: ReferralFacts) -> list[Issue]:
    if _items(sr.get("insurance")) or facts.has_coverage:
        return []
    return [
        warning(
            "incomplete",
            "no insurance: no Coverage in the ServiceRequest, the Bundle or on file; "
            "staff must ask how the visits are paid",
            f"{ROOT}.insurance",
        )
    ]


def _check_age(sr: dict[str, Any], today: date) -> list[Issue]:
    authored = last_day(sr.get("authoredOn"))
    if authored is None or today - authored <= STALE_AFTER:
        return []
    return [
        warning(
            "business-rule",
            f"authored more than {STALE_AFTER.days} days before today: the prescription may "
            "be too old for the payer; staff should confirm it is still valid",
            f"{ROOT}.authoredOn",
        )
    ]


# --- primitives ----------------------------------------------------------------------------


def _missing_or_misshaped(value: Any, name: str, what: str, where: str) -> Issue:
    """``name`` is absent (required) or not a JSON object (structure)."""
    if value is None:
        return error("required", f"{name} is required: {what}", where)
    return error("structure", f"{name} must be a JSON object: {what}", where)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _resource_type(resource: Any) -> str | None:
    return _text(_obj(resource).get("resourceType"))


def _system_label(system: str) -> str:
    return "CPT" if system == CPT else system


def _show(value: object) -> str:
    """A value for a message (repr), cut short so an error never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= _ECHO_LIMIT else text[: _ECHO_LIMIT - 3] + "..."


def _show_plain(value: object) -> str:
    """Like :func:`_show`, but a string is shown without quotes."""
    shown = _show(value)
    return shown[1:-1] if isinstance(value, str) and shown == repr(value) else shown
