"""``_summary=true``: the summary elements of each resource type (R4 ``isSummary``).

FHIR R4 search 3.1.1.5.8: "Return a limited subset of elements from the resource. This subset
SHOULD consist solely of all supported elements that are marked as 'summary' in the base
definition of the resource(s)", and the result is marked SUBSETTED. The flags are read from
the fhir.resources R4B models (``summary_element_property``), which carry the R4 base
definitions' ``isSummary`` for every type the bridge serves. Top-level elements are kept
whole; mandatory ``id``/``meta`` always stay.
"""

from __future__ import annotations

import importlib
from functools import cache


@cache
def summary_elements(resource_type: str) -> tuple[str, ...]:
    """The JSON names of ``resource_type``'s top-level summary elements (choice types spelled
    out: ``deceasedBoolean``, ``deceasedDateTime``); ValueError for an unknown type."""
    try:
        module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
        model = getattr(module, resource_type)
    except (ImportError, AttributeError):
        raise ValueError(f"no R4 definition for {resource_type}") from None
    names = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("summary_element_property") and not name.endswith("__ext"):
            names.append(field.alias or name)
    return tuple(names)
