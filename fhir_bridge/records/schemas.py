"""The inbound boundary of session records: marshmallow 4 schemas and ``load_session``.

``load_session(payload, vocabulary=...)`` turns any JSON-decoded value into a frozen
``SessionRecord`` or raises ``RecordInvalid`` listing *every* problem, each with a JSON path
(``treatments[2].minutes``). It runs in two passes:

1. marshmallow: JSON types, required fields, formats and single-field rules (ids, NPI check digit,
   ICD-10-CM billable codes, UTC offsets, ranges that do not depend on other fields);
2. relations, on whatever part of the record passed (1): vocabulary keys, measure ranges and units,
   laterality, time window, minutes against the session duration, duplicates.

Unknown top-level fields are kept in ``SessionRecord.extra``; unknown nested fields are accepted
and ignored here (the record is stored as received). Problems on patient data, notes and dates
never carry the offending value (no PHI in error bodies).

The view schemas (``SessionViewSchema``, ``SessionListSchema``) describe what the internal API
returns; they exist for the OpenAPI document (``openapi.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, INCLUDE, Schema, ValidationError, fields, validate

from fhir_bridge.fhir.npi import is_valid_npi
from fhir_bridge.mapping.icd10cm import is_billable, is_known, subcodes
from fhir_bridge.mapping.icd10cm import preload_icd10cm as preload_icd10cm  # app.py, bench
from fhir_bridge.records.errors import Problem, RecordInvalid
from fhir_bridge.records.item_scores import ITEM_RULES, item_problem, item_score
from fhir_bridge.records.model import (
    Assessment,
    CoverageRecord,
    GoalRecord,
    Notes,
    PatientRecord,
    ReferralRecord,
    SessionRecord,
    TherapistRecord,
    Treatment,
)
from fhir_bridge.records.vocabulary import MeasureRule, Vocabulary

STATUSES = ("completed", "entered-in-error")
PHASES = ("pre", "post")
SEXES = ("female", "male", "other", "unknown")
MAX_SESSION = timedelta(hours=8)
ASSESSMENT_MARGIN = timedelta(hours=2)  # an assessment may be taken up to 2 h around the session
MINUTES_MIN, MINUTES_MAX = 1, 120
ID_PATTERN = r"^[A-Za-z0-9\-\.]{1,64}$"  # FHIR ids and identifiers derive from it
URI_PATTERN = r"^(urn:[^\s]+|https?://[^\s]+)$"
DATETIME_EXAMPLE = "2026-11-20T10:00:00-05:00"
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?P<offset>Z|[+-][0-9]{2}:[0-9]{2})?"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?")
_ECHO_LIMIT = 80
REQUIRED = "is required"
NULL = "may not be null"


# --- coded messages -------------------------------------------------------------------------


class Msg(str):
    """A marshmallow error message that also carries a FHIR issue code and allowed values.

    marshmallow keeps message objects as given, so the code survives into ``err.messages``.
    """

    code: str
    allowed: tuple[str, ...] | None

    def __new__(cls, text: str, code: str = "value", allowed: Sequence[str] | None = None) -> Msg:
        obj = super().__new__(cls, text)
        obj.code = code
        obj.allowed = tuple(allowed) if allowed is not None else None
        return obj


def _show(value: object) -> str:
    """A value for a message, cut short so an error never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= _ECHO_LIMIT else text[: _ECHO_LIMIT - 3] + "..."


# --- ICD-10-CM ------------------------------------------------------------------------------


def icd10cm_problem(code: str) -> Msg | None:
    """Why ``code`` (dotted, upper case) is not a billable ICD-10-CM code, or None when it is.

    Not date-of-service aware: see ``fhir_bridge.mapping.icd10cm`` (one release of the CMS table,
    that of simple-icd-10-cm 1.5.0), so a session dated in another fiscal year is judged by it.
    """
    if not is_known(code):
        return Msg(f"{_show(code)} is not an ICD-10-CM code", "code-invalid")
    if not is_billable(code):
        children = subcodes(code)[:50]
        return Msg(
            f"{_show(code)} is not a billable ICD-10-CM code (a header: use one of its subcodes)",
            "code-invalid",
            children or None,
        )
    return None


# --- fields ---------------------------------------------------------------------------------


def _messages(invalid: str) -> dict[str, str]:
    return {"required": REQUIRED, "null": NULL, "invalid": invalid}


#: what FHIR strings may not hold (R4 datatypes: below U+0020 only tab, CR and LF)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class Text(fields.String):
    """A JSON string (never a number or anything else) without control characters."""

    default_error_messages = _messages("must be a JSON string")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if isinstance(text, str) and _CONTROL.search(text):
            raise ValidationError(
                Msg("may not contain control characters (only tab, CR and LF are allowed)")
            )
        return text


class Whole(fields.Integer):
    """A JSON number that is a whole number (``20`` or ``20.0``); never a string or a boolean."""

    default_error_messages = _messages("must be a whole number (a JSON number, not a string)")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise self.make_error("invalid")
        if isinstance(value, int):
            return value
        number = _finite_decimal(value)
        if number is None or number.adjusted() > 15 or number != number.to_integral_value():
            raise self.make_error("invalid")
        return int(number)


class Number(fields.Decimal):
    """A JSON number, kept exact as a Decimal; never a string or a boolean."""

    default_error_messages = _messages("must be a number (a JSON number, not a string)")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise self.make_error("invalid")
        number = _finite_decimal(value)
        if number is None:
            raise self.make_error("invalid")
        return number


def _finite_decimal(value: int | float | Decimal) -> Decimal | None:
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return number if number.is_finite() else None


class OffsetDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time with seconds and a UTC offset (``Z`` or ``+hh:mm``)."""

    default_error_messages = _messages(
        f"must be a date-time string with a UTC offset, like {DATETIME_EXAMPLE}"
    )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        match = _DATETIME.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise self.make_error("invalid")
        if match.group("offset") is None:
            raise ValidationError(
                Msg(f"the UTC offset is missing: write it like {DATETIME_EXAMPLE} (or ...Z)")
            )
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(Msg("is not a real date-time (month, day or hour)")) from None


class IsoDate(fields.Date):
    """A calendar date ``YYYY-MM-DD``."""

    default_error_messages = _messages("must be a date string YYYY-MM-DD")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        if not isinstance(value, str) or _DATE.fullmatch(value) is None:
            raise self.make_error("invalid")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValidationError(Msg("is not a real calendar date")) from None


class Icd10Code(fields.String):
    """An ICD-10-CM code, dotted (``M54.2``) or not (``M542``); normalised to upper-case dotted."""

    default_error_messages = _messages("must be an ICD-10-CM code string such as M54.2")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        code = value.upper()
        if _ICD10.fullmatch(code) is None:
            raise ValidationError(
                Msg(f"{_show(value)} is not shaped like an ICD-10-CM code (M54.2)", "code-invalid")
            )
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
        problem = icd10cm_problem(code)
        if problem is not None:
            raise ValidationError(problem)
        return code


class Items(fields.List):
    """A JSON array whose partial result stays index-aligned when some items fail."""

    default_error_messages = _messages("must be a JSON array")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise self.make_error("invalid")
        result: list[Any] = []
        errors: dict[int, Any] = {}
        for index, each in enumerate(value):
            try:
                result.append(self.inner.deserialize(each, **kwargs))
            except ValidationError as error:
                result.append(error.valid_data if isinstance(error.valid_data, dict) else None)
                errors[index] = error.messages
        if errors:
            raise ValidationError(errors, valid_data=result)
        return result


class Object(fields.Nested):
    """A nested JSON object."""

    default_error_messages = {"required": REQUIRED, "null": NULL}


# --- validators that say which FHIR issue code they mean ---------------------------------------


class Range(validate.Range):
    """validate.Range whose message is a ``Msg`` (code ``value``); apispec still reads the range."""

    def _format_error(self, value: Any, message: str) -> str:
        return Msg(super()._format_error(value, message), "value")


class Length(validate.Length):
    """validate.Length with a coded message."""

    def __init__(self, *, min: int, max: int) -> None:
        super().__init__(min=min, max=max, error="must be {min}-{max} characters long")

    def _format_error(self, value: Any, message: str) -> str:
        return Msg(super()._format_error(value, message), "value")


class Pattern(validate.Regexp):
    """validate.Regexp (full match) with a coded message."""

    def __init__(self, regex: str, error: str) -> None:
        super().__init__(regex, error=error)

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:  # ``$`` alone would let a trailing newline in
            raise ValidationError(self._format_error(value))
        return value

    def _format_error(self, value: Any) -> str:
        return Msg(super()._format_error(value), "value")


class Choice(validate.OneOf):
    """validate.OneOf whose message lists the allowed values (code ``code-invalid``)."""

    def __init__(self, choices: Sequence[str]) -> None:
        super().__init__(choices, error="is not one of the allowed values")

    def _format_error(self, value: Any) -> str:
        return Msg("is not one of the allowed values", "code-invalid", list(self.choices))


def _npi(value: str) -> None:
    if not re.fullmatch(r"[0-9]{10}", value):
        raise ValidationError(Msg("an NPI is exactly 10 digits"))
    if not is_valid_npi(value):
        raise ValidationError(Msg("the NPI check digit does not match (not a valid NPI)"))


def _not_blank(value: str) -> None:
    if value and not value.strip():  # "" is left to Length
        raise ValidationError(Msg("may not be blank"))


def _not_future(value: date) -> None:
    # a calendar date somewhere on Earth can be a day ahead of UTC
    if value > datetime.now(UTC).date() + timedelta(days=1):
        raise ValidationError(Msg("is in the future"))


def _ident(max_length: int = 64) -> list[Any]:
    return [_not_blank, Length(min=1, max=max_length)]


# --- record schemas -------------------------------------------------------------------------


class _Part(Schema):
    """A nested part of the record: unknown fields are accepted and ignored."""

    error_messages = {"type": "must be a JSON object"}

    class Meta:
        unknown = EXCLUDE


def _desc(text: str, **extra: Any) -> dict[str, Any]:
    return {"description": text, **extra}


class CoverageSchema(_Part):
    """The patient's insurance: payer and member id (both required when coverage is sent)."""

    payer_id = Text(required=True, validate=_ident(), metadata=_desc("The payer's id."))
    member_id = Text(
        required=True, validate=_ident(), metadata=_desc("The member id on the insurance card.")
    )


class PatientSchema(_Part):
    """The patient; matched on ``mrn``. Demographics are optional once the patient is known."""

    mrn = Text(required=True, validate=_ident(), metadata=_desc("The clinic's patient id (MRN)."))
    family_name = Text(
        allow_none=True, validate=Length(min=1, max=200), metadata=_desc("Family name.")
    )
    given_names = Items(
        Text(validate=Length(min=1, max=200)), allow_none=True, metadata=_desc("Given names.")
    )
    birth_date = IsoDate(
        allow_none=True, validate=_not_future, metadata=_desc("YYYY-MM-DD, not in the future.")
    )
    sex = Text(allow_none=True, validate=Choice(SEXES), metadata=_desc("Administrative sex."))
    coverage = Object(
        CoverageSchema, allow_none=True, metadata=_desc("Insurance; routes payer delivery.")
    )


class TherapistSchema(_Part):
    """Who treated."""

    npi = Text(
        required=True,
        validate=_npi,
        metadata=_desc("The therapist's NPI: 10 digits, valid check digit.", example="1234567893"),
    )
    name = Text(allow_none=True, validate=Length(min=1, max=200), metadata=_desc("Display name."))


class ReferralSchema(_Part):
    """The physician's placer identifier of the prescription (ServiceRequest) this visit fulfils."""

    system = Text(
        required=True,
        validate=Pattern(URI_PATTERN, "must be a URI (urn:... or http(s)://...)"),
        metadata=_desc("Identifier system: a URI (urn:oid:..., https://...)."),
    )
    value = Text(required=True, validate=_ident(128), metadata=_desc("The placer identifier."))


class TreatmentSchema(_Part):
    """One technique applied to one body site, in whole minutes."""

    technique = Text(required=True, metadata=_desc("A technique key from mappings/."))
    minutes = Whole(
        required=True,
        validate=Range(
            min=MINUTES_MIN, max=MINUTES_MAX, error="must be from {min} to {max} minutes"
        ),
        metadata=_desc("Whole minutes of direct one-on-one time, 1-120."),
    )
    body_site = Text(allow_none=True, metadata=_desc("A body-site key from mappings/."))
    laterality = Text(
        allow_none=True,
        metadata=_desc("left | right | bilateral; only on a body site that has sides."),
    )


class AssessmentSchema(_Part):
    """One measurement before (``pre``) or after (``post``) treatment."""

    phase = Text(required=True, validate=Choice(PHASES), metadata=_desc("pre or post."))
    measure = Text(required=True, metadata=_desc("A measure key from mappings/."))
    value = Number(
        metadata=_desc(
            "A JSON number within the measure's range (exact decimal); required unless items "
            "are sent, and equal to their score when both are."
        )
    )
    items = Items(
        Whole(allow_none=True, validate=Range(min=0, max=5, error="must be from {min} to {max}")),
        allow_none=True,
        metadata=_desc(
            "ODI or NDI answered item by item: ten section scores 0-5 (null: unanswered; ODI "
            "allows one). The score is computed by the published rule and kept with the items."
        ),
    )
    unit = Text(allow_none=True, metadata=_desc("The measure's UCUM unit code, when given."))
    body_site = Text(allow_none=True, metadata=_desc("A body-site key from mappings/."))
    laterality = Text(
        allow_none=True,
        metadata=_desc("left | right | bilateral, for a body site or a measure with sides."),
    )
    at = OffsetDateTime(
        allow_none=True,
        metadata=_desc(
            "When measured, with a UTC offset; within 2 h of the session. "
            "Defaults to started_at (pre) or ended_at (post)."
        ),
    )


class GoalSchema(_Part):
    """A patient goal, with the measure that shows progress."""

    goal_id = Text(
        required=True,
        validate=Pattern(ID_PATTERN, "must be 1-64 characters A-Z a-z 0-9 - ."),
        metadata=_desc("Unique within the record; the clinic's goal id."),
    )
    description = Text(
        required=True,
        validate=[_not_blank, Length(min=1, max=500)],
        metadata=_desc("The goal in the patient's words, 1-500 characters."),
    )
    measure = Text(allow_none=True, metadata=_desc("A measure key from mappings/."))
    body_site = Text(allow_none=True, metadata=_desc("A body-site key from mappings/."))
    laterality = Text(
        allow_none=True,
        metadata=_desc("left | right | bilateral, for a body site or a measure with sides."),
    )
    target = Number(allow_none=True, metadata=_desc("Target value, within the measure's range."))
    due = IsoDate(allow_none=True, metadata=_desc("Due date, YYYY-MM-DD."))


class NotesSchema(_Part):
    """The SOAP narrative."""

    subjective = Text(allow_none=True, metadata=_desc("S: what the patient reports."))
    objective = Text(allow_none=True, metadata=_desc("O: what the therapist found."))
    assessment = Text(allow_none=True, metadata=_desc("A: the therapist's assessment."))
    plan = Text(allow_none=True, metadata=_desc("P: the plan of care."))


class SessionSchema(Schema):
    """One massage session as the clinic sends it (``POST /api/v1/sessions``).

    Unknown top-level fields are accepted and kept (``SessionRecord.extra``).
    """

    error_messages = {"type": "must be a JSON object"}

    class Meta:
        unknown = INCLUDE

    session_id = Text(
        required=True,
        validate=Pattern(
            ID_PATTERN, "must be 1-64 characters A-Z a-z 0-9 - . (FHIR ids derive from it)"
        ),
        metadata=_desc("Unique per clinic; the idempotency key (resending replaces)."),
    )
    status = Text(
        required=True,
        validate=Choice(STATUSES),
        metadata=_desc("completed, or entered-in-error to retract the session."),
    )
    patient = Object(
        PatientSchema, required=True, metadata=_desc("The patient, matched on patient.mrn.")
    )
    therapist = Object(TherapistSchema, required=True, metadata=_desc("Who treated."))
    referral = Object(
        ReferralSchema,
        allow_none=True,
        metadata=_desc("The prescription: known -> basedOn; unknown -> accepted and flagged."),
    )
    started_at = OffsetDateTime(required=True, metadata=_desc("Start, with a UTC offset."))
    ended_at = OffsetDateTime(
        required=True, metadata=_desc("End, with a UTC offset; at most 8 h after started_at.")
    )
    diagnoses = Items(
        Icd10Code(),
        allow_none=True,
        metadata=_desc("Billable ICD-10-CM codes (M54.2); normalised to upper-case dotted form."),
    )
    treatments = Items(
        Object(TreatmentSchema),
        metadata=_desc(
            "At least one when completed; minutes add up to no more than the session duration."
        ),
    )
    assessments = Items(
        Object(AssessmentSchema),
        allow_none=True,
        metadata=_desc("Assess - treat - reassess; no two with the same phase, measure and site."),
    )
    goals = Items(
        Object(GoalSchema), allow_none=True, metadata=_desc("Goals; goal_id unique in the record.")
    )
    notes = Object(NotesSchema, allow_none=True, metadata=_desc("The SOAP narrative."))


# --- view schemas (responses of the internal API; documentation only) --------------------------


class ResourceRefSchema(Schema):
    """A FHIR resource the session produced."""

    resourceType = fields.String(metadata=_desc("FHIR resource type.", example="Procedure"))
    id = fields.String(metadata=_desc("Logical id on this server."))
    versionId = fields.String(metadata=_desc("Version written by this submission."))


class BillingLineSchema(Schema):
    """A billing line computed from the treatment minutes (CMS 8-minute rule)."""

    code = fields.String(metadata=_desc("CPT code.", example="97140"))
    system = fields.String(metadata=_desc("Code system URL."))
    units = fields.Integer(metadata=_desc("Billed 15-minute units."))
    minutes = fields.Integer(metadata=_desc("Treatment minutes behind those units."))


class FlagSchema(Schema):
    """Something a person should look at (e.g. a referral that is not on file)."""

    code = fields.String(metadata=_desc("Machine-readable flag code."))
    message = fields.String(metadata=_desc("What is wrong and what to do."))


class SessionViewSchema(Schema):
    """A session as the internal API returns it."""

    session_id = fields.String(metadata=_desc("The session's id."))
    status = fields.String(
        validate=validate.OneOf(STATUSES), metadata=_desc("completed | entered-in-error.")
    )
    received_at = fields.String(metadata=_desc("First received (UTC instant).", format="date-time"))
    updated_at = fields.String(metadata=_desc("Last replaced (UTC instant).", format="date-time"))
    record = fields.Nested(SessionSchema, metadata=_desc("The record as stored (as received)."))
    resources = fields.List(
        fields.Nested(ResourceRefSchema), metadata=_desc("FHIR resources produced.")
    )
    billing = fields.List(fields.Nested(BillingLineSchema), metadata=_desc("Billing units."))
    flags = fields.List(fields.Nested(FlagSchema), metadata=_desc("Flags for follow-up."))


class SessionListSchema(Schema):
    """One page of sessions, in arrival order."""

    sessions = fields.List(fields.Nested(SessionViewSchema), metadata=_desc("This page."))
    next = fields.String(metadata=_desc("URL of the next page; absent on the last page."))


# --- pass 1: marshmallow errors -> problems ---------------------------------------------------

Path = tuple[str | int, ...]
_PHI_ROOTS = frozenset({"patient", "notes"})
_PHI_LEAVES = frozenset({"started_at", "ended_at", "at", "due", "description"})


def render_path(path: Path) -> str:
    """``("treatments", 2, "minutes")`` -> ``treatments[2].minutes``; the root is ``$``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "$"


def _is_phi(path: Path) -> bool:
    """Paths whose values may identify the patient (HIPAA): never echoed in a problem."""
    if not path:
        return True
    if path[0] in _PHI_ROOTS or path[:2] == ("referral", "value"):
        return True
    return isinstance(path[-1], str) and path[-1] in _PHI_LEAVES


def _raw(payload: object, path: Path) -> object:
    node = payload
    for part in path:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        in_dict = isinstance(part, str) and isinstance(node, dict) and part in node
        if not (in_list or in_dict):
            return None
        node = node[part]  # type: ignore[index]
    return node


def _echo(payload: object, path: Path) -> object | None:
    """The input value at ``path`` when it is a safe scalar to show back, else None."""
    if _is_phi(path):
        return None
    value = _raw(payload, path)
    if isinstance(value, str):
        return value if len(value) <= _ECHO_LIMIT else value[: _ECHO_LIMIT - 3] + "..."
    if isinstance(value, bool | int | float | Decimal):
        return value
    return None


def _walk(messages: object, path: Path) -> Iterator[tuple[Path, object]]:
    if isinstance(messages, dict):
        for key, sub in messages.items():
            yield from _walk(sub, path if key == "_schema" else (*path, key))
    elif isinstance(messages, list | tuple):
        for message in messages:
            yield from _walk(message, path)
    else:
        yield path, messages


def _from_marshmallow(messages: object, payload: object) -> list[Problem]:
    problems = []
    for path, message in _walk(messages, ()):
        if isinstance(message, Msg):
            code, allowed = message.code, message.allowed
        else:
            code, allowed = ("required" if message in (REQUIRED, NULL) else "invalid"), None
        problems.append(
            Problem(render_path(path), str(message), _echo(payload, path), allowed, code)
        )
    return problems


def _failed_paths(messages: object) -> set[Path]:
    """Every path (and its ancestors) that has a marshmallow error."""
    failed: set[Path] = set()
    for path, _ in _walk(messages, ()):
        failed.update(path[:n] for n in range(len(path) + 1))
    return failed


# --- pass 2: relations on the part of the record that passed -----------------------------------


class _Checker:
    """Collects the relational problems of one partially loaded record."""

    def __init__(self, data: Mapping[str, Any], vocabulary: Vocabulary, failed: set[Path]) -> None:
        self.data = data
        self.vocab = vocabulary
        self.failed = failed
        self.problems: list[Problem] = []
        self.window = self._session_window()

    def add(self, path: Path, message: str, code: str = "value", **kw: Any) -> None:
        value = None if _is_phi(path) else kw.get("value")
        self.problems.append(Problem(render_path(path), message, value, kw.get("allowed"), code))

    def known(
        self, path: Path, value: object, keys: frozenset[str] | Mapping[str, Any], table: str
    ) -> bool:
        """True when ``value`` is a key of the vocabulary ``table``; else records a problem."""
        if value in keys:
            return True
        self.add(
            path,
            f"no entry for {_show(value)} in mappings/ ({table})",
            "code-invalid",
            value=value,
            allowed=tuple(sorted(keys)),
        )
        return False

    def run(self) -> list[Problem]:
        self._treatments()
        self._assessments()
        self._goals()
        return self.problems

    def items(self, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
        for index, item in enumerate(self.data.get(name) or ()):
            if isinstance(item, dict):
                yield index, item

    # session times ------------------------------------------------------------------------

    def _session_window(self) -> tuple[datetime, datetime] | None:
        start, end = self.data.get("started_at"), self.data.get("ended_at")
        if not isinstance(start, datetime) or not isinstance(end, datetime):
            return None
        if end < start:
            self.add(("ended_at",), "ended_at is before started_at")
            return None
        if end - start > MAX_SESSION:
            self.add(
                ("ended_at",), f"the session lasts {end - start}; more than 8 hours is refused"
            )
            return None
        return start, end

    # treatments ---------------------------------------------------------------------------

    def _treatments(self) -> None:
        completed = self.data.get("status") == "completed"
        if completed and not self.data.get("treatments") and ("treatments",) not in self.failed:
            self.add(
                ("treatments",), "a completed session needs at least one treatment", "required"
            )
        total = 0
        for i, item in self.items("treatments"):
            path: Path = ("treatments", i)
            if "technique" in item:
                self.known(
                    (*path, "technique"), item["technique"], self.vocab.techniques, "techniques"
                )
            self._site(path, item, measure_lateral=False)
            total += item.get("minutes", 0)
        if self.window is not None:
            duration = (self.window[1] - self.window[0]).total_seconds() / 60
            if total > duration:
                self.add(
                    ("treatments",),
                    f"treatment minutes add up to {total}, more than the session's "
                    f"{duration:g} minutes (started_at to ended_at)",
                    value=total,
                )

    def _site(self, path: Path, item: Mapping[str, Any], *, measure_lateral: bool | None) -> None:
        """body_site and laterality: both known, and a side only where there are sides.

        ``measure_lateral`` None: the measure is unknown or invalid, so sides cannot be judged.
        """
        site, side = item.get("body_site"), item.get("laterality")
        site_ok = site is None or self.known(
            (*path, "body_site"), site, self.vocab.body_sites, "body_sites"
        )
        if side is None or not self.known(
            (*path, "laterality"), side, self.vocab.lateralities, "lateralities"
        ):
            return
        if not site_ok or (*path, "body_site") in self.failed:
            return
        if site is not None and site not in self.vocab.lateral_body_sites:
            self.add(
                (*path, "laterality"),
                f"body site {site!r} has no sides: omit laterality",
                value=side,
            )
        elif site is None and measure_lateral is False:
            where = "a body_site" if path[0] == "treatments" else "a body_site or measure"
            self.add((*path, "laterality"), f"laterality needs {where} that has sides", value=side)

    # assessments --------------------------------------------------------------------------

    def _assessments(self) -> None:
        seen: dict[tuple[Any, ...], int] = {}
        for i, item in self.items("assessments"):
            path: Path = ("assessments", i)
            rule = self._measure(path, item)
            self._site(path, item, measure_lateral=self._measure_lateral(path, item, rule))
            self._items(path, item)
            if rule is not None and "value" in item:
                self._in_range((*path, "value"), item["measure"], item["value"], rule)
            unit = item.get("unit")
            if rule is not None and unit is not None and unit != rule.unit:
                self.add(
                    (*path, "unit"),
                    f"the unit of {item['measure']} is {rule.unit!r}, not {_show(unit)}",
                    "code-invalid",
                    value=unit,
                    allowed=(rule.unit,),
                )
            self._at(path, item)
            self._duplicate(seen, path, item)

    def _items(self, path: Path, item: Mapping[str, Any]) -> None:
        """Item-level answers: a measure that has items, scorable, matching ``value``."""
        answers = item.get("items")
        if answers is None:
            if "value" not in item and (*path, "value") not in self.failed:
                self.add((*path, "value"), REQUIRED, "required")
            return
        if (*path, "items") in self.failed or item.get("measure") is None:
            return
        rule = ITEM_RULES.get(item["measure"])
        if rule is None:
            self.add(
                (*path, "items"),
                f"{_show(item['measure'])} is not scored from items",
                allowed=tuple(sorted(ITEM_RULES)),
            )
            return
        problem = item_problem(rule, answers)
        if problem is not None:
            self.add((*path, "items"), problem)
            return
        score = item_score(rule, answers)
        if "value" in item and item["value"] != score:
            self.add(
                (*path, "value"),
                f"does not match the score of its items ({score})",
                value=item["value"],
            )

    def _measure(self, path: Path, item: Mapping[str, Any]) -> MeasureRule | None:
        measure = item.get("measure")
        if measure is None or not self.known(
            (*path, "measure"), measure, self.vocab.measures, "measures"
        ):
            return None
        return self.vocab.measures[measure]

    def _measure_lateral(
        self, path: Path, item: Mapping[str, Any], rule: MeasureRule | None
    ) -> bool | None:
        if rule is not None:
            return rule.lateral
        if item.get("measure") is None and (*path, "measure") not in self.failed:
            return False  # no measure at all: only a body site can carry the side
        return None

    def _in_range(self, path: Path, measure: str, value: Decimal, rule: MeasureRule) -> None:
        if rule.integer and value != value.to_integral_value():
            self.add(path, f"{measure} takes whole numbers, not {value}", value=value)
        if not rule.minimum <= value <= rule.maximum:
            self.add(
                path,
                f"{measure} must be between {rule.minimum} and {rule.maximum}, not {value}",
                value=value,
            )

    def _at(self, path: Path, item: Mapping[str, Any]) -> None:
        at = item.get("at")
        if self.window is None or not isinstance(at, datetime):
            return
        start, end = self.window
        if not start - ASSESSMENT_MARGIN <= at <= end + ASSESSMENT_MARGIN:
            self.add((*path, "at"), "is not within 2 hours of the session (started_at - ended_at)")

    def _duplicate(
        self, seen: dict[tuple[Any, ...], int], path: Path, item: Mapping[str, Any]
    ) -> None:
        if "phase" not in item or "measure" not in item:
            return
        key = (item["phase"], item["measure"], item.get("body_site"), item.get("laterality"))
        first = seen.setdefault(key, path[1])
        if first != path[1]:
            self.add(
                path,
                f"duplicates assessments[{first}] (same phase, measure, body_site, laterality)",
            )

    # goals --------------------------------------------------------------------------------

    def _goals(self) -> None:
        ids: dict[str, int] = {}
        for i, item in self.items("goals"):
            path: Path = ("goals", i)
            goal_id = item.get("goal_id")
            if goal_id is not None:
                first = ids.setdefault(goal_id, i)
                if first != i:
                    self.add(
                        (*path, "goal_id"),
                        f"goal_id is already used by goals[{first}]",
                        value=goal_id,
                    )
            rule = self._measure(path, item)
            self._site(path, item, measure_lateral=self._measure_lateral(path, item, rule))
            target = item.get("target")
            if target is None:
                continue
            if rule is not None:
                self._in_range((*path, "target"), item["measure"], target, rule)
            elif item.get("measure") is None and (*path, "measure") not in self.failed:
                self.add((*path, "target"), "a target needs a measure", "required")


def _field_order() -> dict[str, int]:
    order: dict[str, int] = {}
    for schema in (
        SessionSchema,
        PatientSchema,
        CoverageSchema,
        TherapistSchema,
        ReferralSchema,
        TreatmentSchema,
        AssessmentSchema,
        GoalSchema,
        NotesSchema,
    ):
        for name in schema().fields:
            order.setdefault(name, len(order))
    return order


_FIELD_ORDER = _field_order()
_SCHEMA = SessionSchema()  # stateless: one instance serves every load
_TOP_LEVEL = frozenset(_SCHEMA.fields)
_PATH_TOKEN = re.compile(r"\[(\d+)\]|([^.\[]+)")


def _document_order(problem: Problem) -> list[tuple[int, int]]:
    """Sort key: problems in the order of the record's fields and list items."""
    return [
        (0, int(index)) if index else (1, _FIELD_ORDER.get(name, len(_FIELD_ORDER)))
        for index, name in _PATH_TOKEN.findall(problem.path)
    ]


# --- build ----------------------------------------------------------------------------------


def _opt(data: Mapping[str, Any], key: str) -> Any:
    return data.get(key)


def _build(data: Mapping[str, Any]) -> SessionRecord:
    patient = data["patient"]
    coverage = patient.get("coverage")
    notes = data.get("notes")
    referral = data.get("referral")
    return SessionRecord(
        session_id=data["session_id"],
        status=data["status"],
        patient=PatientRecord(
            mrn=patient["mrn"],
            family_name=_opt(patient, "family_name"),
            given_names=tuple(patient.get("given_names") or ()),
            birth_date=_opt(patient, "birth_date"),
            sex=_opt(patient, "sex"),
            coverage=CoverageRecord(**coverage) if coverage else None,
        ),
        therapist=TherapistRecord(
            npi=data["therapist"]["npi"], name=_opt(data["therapist"], "name")
        ),
        started_at=data["started_at"],
        ended_at=data["ended_at"],
        treatments=tuple(Treatment(**t) for t in data.get("treatments") or ()),
        referral=ReferralRecord(**referral) if referral else None,
        diagnoses=tuple(data.get("diagnoses") or ()),
        assessments=tuple(_assessment(a) for a in data.get("assessments") or ()),
        goals=tuple(GoalRecord(**g) for g in data.get("goals") or ()),
        notes=Notes(**notes) if notes else None,
        extra={k: v for k, v in data.items() if k not in _TOP_LEVEL},
    )


def load_session(payload: object, *, vocabulary: Vocabulary) -> SessionRecord:
    """Validate a JSON-decoded session record and return it as a frozen ``SessionRecord``.

    Raises ``RecordInvalid`` (and nothing else) listing every problem found, each with a JSON
    path; any JSON value is accepted as input.
    """
    try:
        data: Mapping[str, Any] = _SCHEMA.load(payload)  # type: ignore[arg-type]
        messages: object = {}
    except ValidationError as err:
        data = err.valid_data if isinstance(err.valid_data, dict) else {}
        messages = err.messages
    problems = _from_marshmallow(messages, payload)
    problems += _Checker(data, vocabulary, _failed_paths(messages)).run()
    if problems:
        raise RecordInvalid(sorted(problems, key=_document_order))
    return _build(data)


def _assessment(raw: Mapping[str, Any]) -> Assessment:
    """An assessment as loaded; items (already checked) give the value when none was sent."""
    values = dict(raw)
    answers = values.get("items")
    if answers is not None:
        values["items"] = tuple(answers)
        values.setdefault("value", item_score(ITEM_RULES[values["measure"]], answers))
    return Assessment(**values)
