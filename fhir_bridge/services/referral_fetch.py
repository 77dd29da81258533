"""Fetch what a fulfil Task points at on the physician's server, before any transaction opens.

An EHR may send only a Task whose ``focus`` is an absolute URL on its own FHIR server. The
bridge reads that ServiceRequest (and its subject, when that is an absolute URL on the same
server) from registered physician servers only, outside the database transaction so that no
write lock is held across the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_bridge.exchange.fhir_client import FetchError, read_absolute, registered_base
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.services.referral_intake import focus_reference, is_fulfil_task
from fhir_bridge.services.runtime import Runtime


def _absolute(ref: str | None) -> bool:
    return ref is not None and ref.startswith(("http://", "https://"))


def prefetch(
    runtime: Runtime, resources: Iterable[tuple[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Absolute URL -> resource for every fulfil Task's remote focus (and its subject).

    ``resources`` are (FHIRPath of the resource, resource). A focus on an unregistered server
    is a 422 naming the Task's ``focus``; an unreachable server a 502/504 (the EHR should retry).
    """
    settings = runtime.settings
    bases = settings.physician_server_list
    fetched: dict[str, dict[str, Any]] = {}
    for root, resource in resources:
        if resource.get("resourceType") != "Task" or not is_fulfil_task(resource):
            continue
        focus = focus_reference(resource)
        if not _absolute(focus) or focus in fetched:
            continue
        assert focus is not None
        expression = f"{root}.focus"
        sr = _read(focus, bases, settings.fetch_timeout_seconds, expression)
        fetched[focus] = sr
        subject = sr.get("subject")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if _absolute(ref) and registered_base(ref, bases) and ref not in fetched:
            fetched[ref] = _read(ref, bases, settings.fetch_timeout_seconds, expression)
    return fetched


def _read(url: str, bases: list[str], timeout: float, expression: str) -> dict[str, Any]:
    try:
        return read_absolute(url, bases=bases, timeout=timeout)
    except FetchError as exc:
        code = "not-found" if exc.status == 422 else "transient"
        raise FhirError(exc.status, error(code, str(exc), expression)) from None
