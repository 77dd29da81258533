"""The CapabilityStatement: generated from the search registry so it lists exactly what works."""

from __future__ import annotations

from typing import Any

from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.transaction import BUNDLE_WRITE_TYPES, DIRECT_WRITE_TYPES

FHIR_VERSION = "4.0.1"
READ_INTERACTIONS = ("read", "vread", "history-instance", "search-type")
WRITE_INTERACTIONS = ("create", "update")
COMMON_PARAMS = (
    {
        "name": "_id",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        "type": "token",
        "documentation": "Logical id of the resource",
    },
    {
        "name": "_lastUpdated",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        "type": "date",
        "documentation": "When the resource last changed (prefixes eq ne gt lt ge le sa eb ap)",
    },
)


def _resource_entry(resource_type: str, extra_interactions: tuple[str, ...]) -> dict[str, Any]:
    params = SEARCH_PARAMS[resource_type]
    references = sorted(name for name, p in params.items() if p.type == "reference")
    revincludes = sorted(
        f"{src}:{name}"
        for src, src_params in SEARCH_PARAMS.items()
        for name, p in src_params.items()
        if p.type == "reference" and (not p.targets or resource_type in p.targets)
    )
    search_params = [
        {
            "name": name,
            **({"definition": p.definition} if p.definition else {}),
            "type": p.type,
            **({"documentation": p.description} if p.description else {}),
        }
        for name, p in sorted(params.items())
    ]
    writable = resource_type in DIRECT_WRITE_TYPES
    interactions = (*READ_INTERACTIONS, *(WRITE_INTERACTIONS if writable else ()))
    return {
        "type": resource_type,
        "interaction": [
            {"code": code, **({"documentation": _DOCS[code]} if code in _DOCS else {})}
            for code in (*interactions, *extra_interactions)
        ],
        "versioning": "versioned",
        "readHistory": True,
        **(
            {"updateCreate": True, "conditionalCreate": True, "conditionalUpdate": False}
            if writable
            else {}
        ),
        "conditionalRead": "not-match",
        "searchInclude": [f"{resource_type}:{name}" for name in references],
        "searchRevInclude": revincludes,
        "searchParam": [*COMMON_PARAMS, *search_params],
        **({"operation": list(_OPERATIONS[resource_type])} if resource_type in _OPERATIONS else {}),
    }


_DOCS = {
    "history-instance": (
        "Newest version first; _since (an instant: versions changed at or after it) and "
        "_count (page size, with a next link); Bundle.total counts every matching version."
    ),
}

#: search behaviour every type shares (R4 search: 3.1.1.4.2 ap, 3.1.1.4.13 references,
#: 3.1.1.5.7 _total, 3.1.1.5.8 _summary)
SEARCH_DOC = (
    "Search paging uses keyset cursors evaluated against a snapshot: entries written during "
    "paging are never skipped or repeated. Unknown search parameters answer 400 unless "
    "'Prefer: handling=lenient' is sent. _summary=true returns the elements the R4 base "
    "definitions mark isSummary (tagged SUBSETTED); _summary=count|data|false and _elements "
    "are supported, _summary=text is not. _total=accurate adds Bundle.total on every page, "
    "_total=none (the default, as is estimate) omits it. Date parameters take eq ne gt lt ge "
    "le sa eb and ap (approximately: the value widened by 10% of its distance from now). A "
    "bare id on a reference parameter with several target types means Type/id for the one "
    "type holding a resource with that id the caller may see; 400 when several types do "
    "(give Type/id or use :Type); when none does it matches references to that id."
)

#: operations on resource types (ServiceRequest/$documentation is the bridge's own; README)
_OPERATIONS: dict[str, tuple[dict[str, str], ...]] = {
    "Patient": (
        {
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        },
        {
            "name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        },
    ),
}

BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
_EXPORT_DOC = (
    "Bulk Data Access IG 2.0.0 (async: Prefer: respond-async; 202 and Content-Location, then "
    "poll; DELETE cancels). _outputFormat (application/fhir+ndjson, application/ndjson, "
    "ndjson), _since, _type, _typeFilter (this server's search parameters, no result "
    "parameters); other parameters answer 400 unless Prefer: handling=lenient. Files are for "
    "the client that asked only (requiresAccessToken), and expire. The system level is for "
    "clinic administrators; every level exports only what the caller may read."
)


def _group_entry() -> dict[str, Any]:
    """Group: one per payer (id = the payer Organization's), computed from its Coverages."""
    return {
        "type": "Group",
        "documentation": (
            "One Group per payer, id = the payer Organization's id, members = patients with a "
            "Coverage naming that payer, with its period (inactive when not current); "
            "readable by that payer (and the clinic)."
        ),
        "interaction": [{"code": "read"}],
        "operation": [
            {
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
            }
        ],
    }


_BUNDLE_DOC = (
    "POST [base] with a transaction or batch Bundle: POST (ifNoneExist), PUT (Type/id or "
    "conditional Type?params) entries on "
    + ", ".join(BUNDLE_WRITE_TYPES)
    + "; GET entries read (Type/id) or search (Type?params) any type searchable here, each "
    "answered as the same direct request (a search: 200 OK and its searchset, with includes and "
    "a next link to the ordinary search URL; 403 for a type the token may not read, 400 for a "
    "bad parameter, naming Bundle.entry[i].request.url), within the caller's access; "
    "urn:uuid fullUrls and conditional references are resolved. DELETE is not supported. "
    "Re-sent referrals: the ServiceRequest is matched on its placer identifier (with or without "
    "ifNoneExist); unchanged, nothing is written; changed, it is checked by the rules of a new "
    "referral (422 leaves the one on file untouched) and stored as its next version. Other "
    "entries are matched on business identifiers only (an ifNoneExist naming an identifier the "
    "resource lacks is refused); a matched Patient, Coverage or Condition on file is kept as is, "
    "with a warning naming what differs; entries without identifiers reuse what the re-sent "
    "referral links to only while unchanged."
)

TERMINOLOGY_PARAMS = (
    {
        "name": "_id",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        "type": "token",
    },
    {
        "name": "url",
        "definition": "http://hl7.org/fhir/SearchParameter/conformance-url",
        "type": "uri",
    },
)


def _terminology_entries() -> list[dict[str, Any]]:
    """CodeSystem and ConceptMap: generated from mappings/, read-only, ConceptMap/$translate."""
    entries = []
    for resource_type in ("CodeSystem", "ConceptMap"):
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": list(TERMINOLOGY_PARAMS),
        }
        if resource_type == "ConceptMap":
            entry["operation"] = [
                {
                    "name": "translate",
                    "definition": "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate",
                }
            ]
        entries.append(entry)
    return entries


def _security(fhir_base_url: str) -> dict[str, Any]:
    """SMART Backend Services: where the token endpoint is (RFC 6749 token via oauth-uris)."""
    server = fhir_base_url.rstrip("/").removesuffix("/fhir")
    return {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": (
            "Every interaction except metadata needs a bearer token from the token endpoint "
            "(SMART Backend Services, private_key_jwt with RS384 or ES384). One access policy: "
            "payers see their current members (never a competitor's Coverage), EHRs the patients "
            "of referrals the clinic accepted and their own referrals; a token's SMART types "
            "bound every path (includes, batch entries, operations). What a caller may not see "
            "answers as if it did not exist."
        ),
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": f"{server}/auth/token"}],
            }
        ],
    }


def capability_statement(
    *,
    base_url: str,
    software_version: str,
    date: str,
    extra_interactions: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """CapabilityStatement (kind instance, JSON only) for the implemented interactions."""
    extra = extra_interactions or {}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "fhir-bridge",
        "kind": "instance",
        "software": {"name": "fhir-bridge", "version": software_version},
        "implementation": {"description": "fhir-bridge FHIR R4 endpoint", "url": base_url},
        "instantiates": [BULK_DATA],
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": SEARCH_DOC,
                "security": _security(base_url),
                "interaction": [
                    {"code": "transaction", "documentation": _BUNDLE_DOC},
                    {"code": "batch", "documentation": _BUNDLE_DOC},
                ],
                "operation": [
                    {
                        "name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                        "documentation": _EXPORT_DOC,
                    }
                ],
                "resource": sorted(
                    [_resource_entry(rt, extra.get(rt, ())) for rt in SEARCH_PARAMS]
                    + _terminology_entries()
                    + [_group_entry()],
                    key=lambda entry: entry["type"],
                ),
            }
        ],
    }
