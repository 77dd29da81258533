"""HTTP surface of the published code mappings: CodeSystem and ConceptMap read, search, $translate.

The resources are generated from the mapping tables the app loaded at start-up
(``app.extensions["fhir_bridge_tables"]``); nothing here touches the database.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request

from fhir_bridge.api.http import fhir_response, negotiate, runtime
from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.outcome import FhirError, Issue, error, operation_outcome, warning
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.mapping.terminology import code_systems, concept_maps, translate

terminology = Blueprint("terminology", __name__, url_prefix="/fhir")

TRANSPORT_PARAMS = frozenset({"_format", "_pretty"})
SEARCH_PARAMS = frozenset({"_id", "url"})
#: $translate input parameters we answer (R4 ConceptMap-translate)
TRANSLATE_PARAMS = frozenset({"system", "code", "coding", "targetsystem", "url"})
JSON_BODIES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})


@terminology.before_request
def _negotiate() -> None:
    negotiate()


def _tables() -> MappingTables:
    return current_app.extensions["fhir_bridge_tables"]


def _resources(resource_type: str) -> list[dict[str, Any]]:
    build = code_systems if resource_type == "CodeSystem" else concept_maps
    return build(_tables())


def _lenient() -> bool:
    """True when the client sent ``Prefer: handling=lenient``."""
    prefer = request.headers.get("Prefer", "").replace(";", ",")
    return any(p.strip().lower() == "handling=lenient" for p in prefer.split(","))


def _unknown(diagnostics: str, expression: str, lenient: bool) -> Issue:
    if lenient:
        return warning("not-supported", f"{diagnostics}; ignored", expression)
    return error("not-supported", diagnostics, expression)


# --- read and search ----------------------------------------------------------------------


@terminology.get("/CodeSystem")
def search_code_systems() -> Response:
    """Search the clinic CodeSystems (``url``, ``_id``)."""
    return _search("CodeSystem")


@terminology.get("/ConceptMap")
def search_concept_maps() -> Response:
    """Search the ConceptMaps (``url``, ``_id``)."""
    return _search("ConceptMap")


@terminology.get("/CodeSystem/<resource_id>")
def read_code_system(resource_id: str) -> Response:
    """Read one clinic CodeSystem."""
    return fhir_response(_find("CodeSystem", resource_id))


@terminology.get("/ConceptMap/<resource_id>")
def read_concept_map(resource_id: str) -> Response:
    """Read one ConceptMap."""
    return fhir_response(_find("ConceptMap", resource_id))


def _find(resource_type: str, resource_id: str) -> dict[str, Any]:
    for resource in _resources(resource_type):
        if resource["id"] == resource_id:
            return resource
    raise FhirError(404, error("not-found", f"{resource_type}/{resource_id} is not known"))


def _search(resource_type: str) -> Response:
    lenient = _lenient()
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in TRANSPORT_PARAMS]
    issues = [
        _unknown(f"Unknown search parameter {k!r} for {resource_type}", k, lenient)
        for k, _ in params
        if k not in SEARCH_PARAMS
    ]
    if issues and not lenient:
        raise FhirError(400, issues)
    used = [(k, v) for k, v in params if k in SEARCH_PARAMS]
    matches = [r for r in _resources(resource_type) if _matches(r, used)]
    base = runtime().settings.fhir_base_url
    query = urlencode(used)
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/{resource_type}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in matches
    ]
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "link": [
            {"relation": "self", "url": f"{base}/{resource_type}" + (f"?{query}" if query else "")}
        ],
    }
    if entries:
        bundle["entry"] = entries
    return fhir_response(bundle)


def _matches(resource: dict[str, Any], params: list[tuple[str, str]]) -> bool:
    """Every parameter must match; a comma-separated value matches any of its parts."""
    element = {"_id": "id", "url": "url"}
    return all(resource[element[name]] in value.split(",") for name, value in params)


# --- $translate ---------------------------------------------------------------------------


@terminology.route("/ConceptMap/$translate", methods=["GET", "POST"])
def translate_any() -> Response:
    """$translate over every ConceptMap (narrowed by ``url`` / ``targetsystem``)."""
    return _translate(None)


@terminology.route("/ConceptMap/<resource_id>/$translate", methods=["GET", "POST"])
def translate_one(resource_id: str) -> Response:
    """$translate with one ConceptMap."""
    return _translate(_find("ConceptMap", resource_id)["url"])


def _translate(map_url: str | None) -> Response:
    lenient = _lenient()
    given = _post_inputs(lenient) if request.method == "POST" else _get_inputs(lenient)
    if map_url is not None:
        if given.get("url") not in (None, map_url):
            raise FhirError(
                400,
                error("invalid", f"url {given['url']} is not this ConceptMap ({map_url})", "url"),
            )
        given["url"] = map_url
    body = translate(
        _tables(),
        system=given["system"],
        code=given["code"],
        target_system=given.get("targetsystem"),
        url=given.get("url"),
    )
    return fhir_response(body)


def _get_inputs(lenient: bool) -> dict[str, str]:
    inputs: dict[str, str] = {}
    problems: list[Issue] = []
    for name, value in request.args.items(multi=True):
        if name in TRANSPORT_PARAMS:
            continue
        if name not in TRANSLATE_PARAMS - {"coding"}:
            issue = _unknown(f"$translate parameter {name!r} is not supported", name, lenient)
            problems += [] if lenient else [issue]
        elif name in inputs:
            problems.append(error("invalid", f"{name!r} may be given only once", name))
        else:
            inputs[name] = value
    _require(inputs, problems, lambda name: name)
    return inputs


def _post_inputs(lenient: bool) -> dict[str, str]:
    parameters = _parameters_body()
    inputs: dict[str, str] = {}
    problems: list[Issue] = []
    for index, param in enumerate(parameters):
        where = f"Parameters.parameter[{index}]"
        name = param.get("name") if isinstance(param, dict) else None
        if name not in TRANSLATE_PARAMS:
            issue = _unknown(f"$translate parameter {name!r} is not supported", where, lenient)
            problems += [] if lenient else [issue]
        elif name in inputs or (name == "coding" and {"system", "code"} & inputs.keys()):
            problems.append(error("invalid", f"{name!r} given twice (or with coding)", where))
        else:
            problems += _take(name, param, where, inputs)
    _require(inputs, problems, lambda name: f"Parameters.parameter.where(name = '{name}')")
    return inputs


_VALUE_TYPES = {
    "system": "valueUri",
    "code": "valueCode",
    "targetsystem": "valueUri",
    "url": "valueUri",
    "coding": "valueCoding",
}


def _take(name: str, param: dict[str, Any], where: str, inputs: dict[str, str]) -> list[Issue]:
    """Copy one input parameter into ``inputs``; issues if it has the wrong shape."""
    key = _VALUE_TYPES[name]
    value = param.get(key)
    if name != "coding":
        if not isinstance(value, str) or not value:
            return [error("invalid", f"{name!r} needs a non-empty {key}", f"{where}.{key}")]
        inputs[name] = value
        return []
    if not isinstance(value, dict):
        return [error("invalid", "'coding' needs a valueCoding", f"{where}.{key}")]
    for part in ("system", "code"):
        if isinstance(value.get(part), str) and value[part]:
            inputs[part] = value[part]
    return []


def _require(inputs: dict[str, str], problems: list[Issue], expression: Any) -> None:
    for name in ("code", "system"):
        if name not in inputs:
            problems.append(error("required", f"$translate needs {name!r}", expression(name)))
    if problems:
        raise FhirError(400, problems)


def _parameters_body() -> list[Any]:
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_BODIES:
        raise FhirError(
            415, error("not-supported", "POST $translate takes a FHIR Parameters resource as JSON")
        )
    try:
        body = jsonio.loads(request.get_data())
    except jsonio.JsonError as exc:
        raise FhirError(400, error("structure", str(exc), "Parameters")) from None
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(
            400, error("invalid", "The body must be a Parameters resource", "Parameters")
        )
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise FhirError(400, error("structure", "parameter must be a list", "Parameters.parameter"))
    return parameters
