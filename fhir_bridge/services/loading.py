"""Loading Bundles of resources into the store (sample data, migrations from other systems)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.fhir.validation import require_valid
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import write_session
from fhir_bridge.store.repository import ResourceStore


@dataclass
class LoadResult:
    """What loading one Bundle did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


def _entry_resource(entry: dict[str, Any], index: int) -> dict[str, Any]:
    resource = entry.get("resource")
    if not isinstance(resource, dict) or "id" not in resource:
        raise FhirError(
            422,
            error(
                "required",
                "Every entry needs a resource with an id",
                f"Bundle.entry[{index}].resource",
            ),
        )
    return resource


def load_bundle(
    runtime: Runtime, bundle: dict[str, Any], *, on_entry: Callable[[], None] | None = None
) -> LoadResult:
    """Validate the whole Bundle, then upsert every entry's resource by id in one transaction."""
    require_valid(bundle, expected_type="Bundle")
    entries = bundle.get("entry", [])
    resources = [_entry_resource(e, i) for i, e in enumerate(entries)]
    result = LoadResult()
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        for resource in resources:
            before = store.get(resource["resourceType"], resource["id"])
            stored, created = store.update(resource)
            if created:
                result.created += 1
            elif before is not None and stored.version_id == before.version_id:
                result.unchanged += 1
            else:
                result.updated += 1
            if on_entry:
                on_entry()
    return result


def store_is_empty(runtime: Runtime) -> bool:
    """True when no resource has ever been stored."""
    from fhir_bridge.store.db import read_session
    from fhir_bridge.store.snapshot import current_sequence

    with read_session(runtime.sessions) as session:
        return current_sequence(session) == 0
