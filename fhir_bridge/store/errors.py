"""Store outcomes a caller must handle: missing, deleted, stale, or duplicate resources."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_bridge.fhir.outcome import FhirError, error

if TYPE_CHECKING:
    from fhir_bridge.store.repository import StoredResource


class ResourceNotFound(FhirError):
    """No resource (or version) with that type and id."""

    def __init__(self, resource_type: str, resource_id: str, version: int | None = None) -> None:
        what = f"{resource_type}/{resource_id}" + (f"/_history/{version}" if version else "")
        super().__init__(404, error("not-found", f"Resource {what} is not known"))


class ResourceGone(FhirError):
    """The resource existed and was deleted."""

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            410, error("deleted", f"Resource {resource_type}/{resource_id} was deleted")
        )


class VersionConflict(FhirError):
    """An update named a version that is no longer current (optimistic locking)."""

    def __init__(self, resource_type: str, resource_id: str, expected: int, current: int) -> None:
        super().__init__(
            412,
            error(
                "conflict",
                f"{resource_type}/{resource_id} is at version {current}, not {expected}",
            ),
        )
        self.current_version = current


class DuplicateIdentifier(FhirError):
    """A business identifier is already owned by another resource of the same type."""

    def __init__(self, resource_type: str, system: str, existing: StoredResource) -> None:
        super().__init__(
            409,
            error(
                "duplicate",
                f"{resource_type} with an identifier of system {system} already exists "
                f"as {existing.resource_type}/{existing.resource_id}",
                f"{resource_type}.identifier",
            ),
        )
        self.existing = existing
