"""The registry of search parameters the bridge supports, per resource type (R4 definitions).

``_id`` and ``_lastUpdated`` apply to every type and come from the resource row, so they are
not listed here; search_query accepts them on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

SP = "http://hl7.org/fhir/SearchParameter/"


@dataclass(frozen=True)
class SearchParam:
    """One search parameter: its name and type and the JSON element paths it indexes.

    ``paths`` are dotted element paths with choice types spelled out
    (``effectiveDateTime``, ``effectivePeriod``). ``targets`` lists the resource types a
    reference may point at (empty: any). ``where_type`` mirrors a FHIRPath
    ``.where(resolve() is X)``: only references to that type are indexed.
    """

    resource_type: str
    name: str
    type: str
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()
    definition: str = ""
    description: str = ""
    where_type: str | None = None


PARAM_TYPES = ("token", "reference", "date", "string")

SUBJECT_TARGETS = ("Group", "Device", "Patient", "Location")
REQUESTER_TARGETS = (
    "Device",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
)
TASK_OWNER_TARGETS = (
    "Practitioner",
    "Organization",
    "CareTeam",
    "HealthcareService",
    "Patient",
    "Device",
    "PractitionerRole",
    "RelatedPerson",
)
OBSERVATION_PART_OF_TARGETS = (
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationStatement",
    "Procedure",
    "Immunization",
    "ImagingStudy",
)
OBSERVATION_BASED_ON_TARGETS = (
    "CarePlan",
    "DeviceRequest",
    "ImmunizationRecommendation",
    "MedicationRequest",
    "NutritionOrder",
    "ServiceRequest",
)
# One row per parameter: (name, type, space-separated paths, definition id, description,
# targets, where_type); definition ids are relative to http://hl7.org/fhir/SearchParameter/.
_Row = tuple[str, str, str, str, str, tuple[str, ...], str | None]


def _p(
    name: str,
    ptype: str,
    paths: str,
    definition: str,
    description: str,
    targets: tuple[str, ...] = (),
    where_type: str | None = None,
) -> _Row:
    return (name, ptype, paths, definition, description, targets, where_type)


def _identifier(definition: str = "clinical-identifier") -> _Row:
    return _p("identifier", "token", "identifier", definition, "A business identifier")


def _patient(path: str = "subject", definition: str = "clinical-patient") -> _Row:
    doc = "The patient the record is about"
    return _p("patient", "reference", path, definition, doc, ("Patient",), "Patient")


def _status(definition: str) -> _Row:
    return _p("status", "token", "status", definition, "Status of the resource")


_NAME_DOC = "Any part of a name: family, given, prefix, suffix or text"
_OBS_DATE_PATHS = "effectiveDateTime effectivePeriod effectiveTiming effectiveInstant"

_TABLE: dict[str, tuple[_Row, ...]] = {
    "Patient": (
        _identifier("Patient-identifier"),
        _p("name", "string", "name", "Patient-name", _NAME_DOC),
        _p("family", "string", "name.family", "individual-family", "A portion of the family name"),
        _p("given", "string", "name.given", "individual-given", "A portion of the given name"),
        _p("birthdate", "date", "birthDate", "individual-birthdate", "The date of birth"),
        # US Core Patient: name + gender is a SHOULD combination (administrative-gender codes)
        _p("gender", "token", "gender", "individual-gender", "male | female | other | unknown"),
    ),
    "Practitioner": (
        _identifier("Practitioner-identifier"),
        _p("name", "string", "name", "Practitioner-name", _NAME_DOC),
    ),
    "Organization": (
        _identifier("Organization-identifier"),
        _p("name", "string", "name alias", "Organization-name", "Name or alias"),
    ),
    "ServiceRequest": (
        _patient(),
        _p(
            "subject",
            "reference",
            "subject",
            "ServiceRequest-subject",
            "Who the request is for",
            SUBJECT_TARGETS,
        ),
        _status("ServiceRequest-status"),
        _identifier(),
        _p(
            "requester",
            "reference",
            "requester",
            "ServiceRequest-requester",
            "Who asks for the service",
            REQUESTER_TARGETS,
        ),
        _p("authored", "date", "authoredOn", "ServiceRequest-authored", "When it was signed"),
        _p("code", "token", "code", "clinical-code", "What is being requested"),
        _p("intent", "token", "intent", "ServiceRequest-intent", "proposal | plan | order ..."),
        _p("category", "token", "category", "ServiceRequest-category", "Classification"),
    ),
    "Procedure": (
        _patient(),
        _p(
            "subject",
            "reference",
            "subject",
            "Procedure-subject",
            "Who it was performed on",
            ("Group", "Patient"),
        ),
        _p(
            "date",
            "date",
            "performedDateTime performedPeriod",
            "clinical-date",
            "When the procedure was performed",
        ),
        _p("code", "token", "code", "clinical-code", "A code identifying the procedure"),
        _p(
            "based-on",
            "reference",
            "basedOn",
            "Procedure-based-on",
            "The request it fulfils",
            ("CarePlan", "ServiceRequest"),
        ),
        _identifier(),
        _status("Procedure-status"),
    ),
    "Observation": (
        _patient(),
        _p(
            "subject", "reference", "subject", "Observation-subject", "The subject", SUBJECT_TARGETS
        ),
        _p("category", "token", "category", "Observation-category", "Classification"),
        _p("code", "token", "code", "clinical-code", "The code of the observation"),
        _p("date", "date", _OBS_DATE_PATHS, "clinical-date", "Clinically relevant time/period"),
        _p(
            "part-of",
            "reference",
            "partOf",
            "Observation-part-of",
            "Part of referenced event",
            OBSERVATION_PART_OF_TARGETS,
        ),
        _p(
            "based-on",
            "reference",
            "basedOn",
            "Observation-based-on",
            "The request it fulfils",
            OBSERVATION_BASED_ON_TARGETS,
        ),
        _status("Observation-status"),
        _identifier(),
    ),
    "Coverage": (
        _patient("beneficiary", "Coverage-patient"),
        _p(
            "beneficiary",
            "reference",
            "beneficiary",
            "Coverage-beneficiary",
            "Covered party",
            ("Patient",),
        ),
        _p(
            "payor",
            "reference",
            "payor",
            "Coverage-payor",
            "Who is responsible for the risk",
            ("Organization", "Patient", "RelatedPerson"),
        ),
        _identifier("Coverage-identifier"),
        _status("Coverage-status"),
    ),
    "Condition": (
        _patient(),
        _p(
            "subject",
            "reference",
            "subject",
            "Condition-subject",
            "Who has the condition",
            ("Group", "Patient"),
        ),
        _p("code", "token", "code", "clinical-code", "Code for the condition"),
        _p("category", "token", "category", "Condition-category", "The category"),
        _p(
            "clinical-status",
            "token",
            "clinicalStatus",
            "Condition-clinical-status",
            "active | recurrence | relapse | inactive | remission | resolved",
        ),
        _identifier(),
    ),
    "Task": (
        _p("owner", "reference", "owner", "Task-owner", "Who is responsible", TASK_OWNER_TARGETS),
        _p(
            "requester",
            "reference",
            "requester",
            "Task-requester",
            "Who asked for the task",
            REQUESTER_TARGETS,
        ),
        _p("focus", "reference", "focus", "Task-focus", "What the task acts on"),
        _status("Task-status"),
        _patient("for", "Task-patient"),
        _p("subject", "reference", "for", "Task-subject", "Who or what the task is for"),
        _identifier("Task-identifier"),
        _p("code", "token", "code", "Task-code", "The kind of task"),
        _p("authored-on", "date", "authoredOn", "Task-authored-on", "When it was created"),
    ),
    "Goal": (
        _patient(),
        _p(
            "subject",
            "reference",
            "subject",
            "Goal-subject",
            "Who the goal is for",
            ("Group", "Organization", "Patient"),
        ),
        _p(
            "lifecycle-status",
            "token",
            "lifecycleStatus",
            "Goal-lifecycle-status",
            "proposed | planned | accepted | active | on-hold | completed ...",
        ),
        _identifier(),
    ),
    "DocumentReference": (
        _patient(),
        _p(
            "subject",
            "reference",
            "subject",
            "DocumentReference-subject",
            "Who or what the document is about",
            ("Practitioner", "Group", "Device", "Patient", "Location"),
        ),
        _p("type", "token", "type", "clinical-type", "Kind of document (LOINC)"),
        _p("category", "token", "category", "DocumentReference-category", "Categorization"),
        _p("date", "date", "date", "DocumentReference-date", "When the reference was created"),
        _p(
            "related",
            "reference",
            "context.related",
            "DocumentReference-related",
            "Related identifiers or resources",
        ),
        _identifier(),
        _status("DocumentReference-status"),
    ),
    "AuditEvent": (
        _p("date", "date", "recorded", "AuditEvent-date", "Time when the event was recorded"),
        _p("agent", "reference", "agent.who", "AuditEvent-agent", "Who participated"),
        _p("entity", "reference", "entity.what", "AuditEvent-entity", "Specific instance"),
        _p("outcome", "token", "outcome", "AuditEvent-outcome", "Whether the event succeeded"),
        _p("type", "token", "type", "AuditEvent-type", "Type/identifier of event"),
        _p("subtype", "token", "subtype", "AuditEvent-subtype", "More specific type of event"),
        _p("action", "token", "action", "AuditEvent-action", "Type of action performed"),
        _p(
            "patient",
            "reference",
            "entity.what",
            "AuditEvent-patient",
            "Identity of the patient the event is about",
            ("Patient",),
            "Patient",
        ),
    ),
    "PractitionerRole": (
        _p(
            "practitioner",
            "reference",
            "practitioner",
            "PractitionerRole-practitioner",
            "The practitioner in the role",
            ("Practitioner",),
        ),
        _p(
            "organization",
            "reference",
            "organization",
            "PractitionerRole-organization",
            "Where the role is available",
            ("Organization",),
        ),
        _identifier("PractitionerRole-identifier"),
    ),
}


def _build(table: dict[str, tuple[_Row, ...]]) -> dict[str, dict[str, SearchParam]]:
    registry: dict[str, dict[str, SearchParam]] = {}
    for resource_type, rows in table.items():
        registry[resource_type] = {
            name: SearchParam(
                resource_type=resource_type,
                name=name,
                type=ptype,
                paths=tuple(paths.split()),
                targets=targets,
                definition=SP + definition,
                description=description,
                where_type=where_type,
            )
            for name, ptype, paths, definition, description, targets, where_type in rows
        }
    return registry


SEARCH_PARAMS: dict[str, dict[str, SearchParam]] = _build(_TABLE)

#: Indexed for the bridge's own queries, never offered to clients (names start with ``~``):
#: the coverage period decides which patients a payer may see.
COVERAGE_PERIOD = "~period"
_INTERNAL: dict[str, tuple[_Row, ...]] = {
    "Coverage": (_p(COVERAGE_PERIOD, "date", "period", "", "Coverage period (internal)"),),
}
INDEXED_PARAMS: dict[str, dict[str, SearchParam]] = {
    rt: {**params, **_build(_INTERNAL).get(rt, {})} for rt, params in SEARCH_PARAMS.items()
}
SEARCHABLE_TYPES: tuple[str, ...] = tuple(SEARCH_PARAMS)


def params_for(resource_type: str) -> dict[str, SearchParam]:
    """The search parameters of ``resource_type`` by name; KeyError for a type we do not search."""
    return SEARCH_PARAMS[resource_type]
