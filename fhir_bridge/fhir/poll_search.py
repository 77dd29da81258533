"""Pure helpers of pull mode: the searches, their pages, the ``_lastUpdated`` cursor.

Nothing here does I/O. A physician's server is searched for referrals addressed to the clinic
(ServiceRequest ``performer``, fulfil Task ``owner``: the clinic Organization by its NPI) that
changed since a cursor, oldest first; a page's references are made absolute on the partner's
base (a relative ``Patient/1`` in the partner's resource is the partner's Patient, never ours).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_bridge.fhir.dates import parse_fhir_datetime_range
from fhir_bridge.fhir.npi import NPI_SYSTEM

TASK_FULFIL = "http://hl7.org/fhir/CodeSystem/task-code|fulfill"
#: longest ``outbox_cursor.name``
CURSOR_NAME_MAX = 64
#: the resource types polled, with the element naming who is asked to act
ADDRESSEE = {"ServiceRequest": "performer", "Task": "owner"}
_EPOCH = datetime(1970, 1, 1)
_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE = re.compile(rf"^[A-Z][A-Za-z]{{1,63}}/{_ID}(/_history/{_ID})?$")
_INCLUDES = {
    "ServiceRequest": [
        ("_include", "ServiceRequest:subject"),
        ("_include", "ServiceRequest:requester"),
        ("_include", "ServiceRequest:performer"),
        ("_include:iterate", "PractitionerRole:practitioner"),
    ],
    "Task": [
        ("_include", "Task:focus"),
        ("_include", "Task:owner"),
        ("_include:iterate", "ServiceRequest:subject"),
        ("_include:iterate", "ServiceRequest:requester"),
        ("_include:iterate", "ServiceRequest:performer"),
        ("_include:iterate", "PractitionerRole:practitioner"),
    ],
}


def cursor_name(partner_key: str, resource_type: str) -> str:
    """``poll:<partner key>:<type>`` (a hash of the key when that would not fit the column)."""
    name = f"poll:{partner_key}:{resource_type}"
    if len(name) <= CURSOR_NAME_MAX:
        return name
    digest = hashlib.sha256(partner_key.encode()).hexdigest()[:24]
    return f"poll:#{digest}:{resource_type}"


def instant_micros(value: Any) -> int | None:
    """A ``meta.lastUpdated`` as microseconds since the epoch (UTC); None when unusable."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        low, _ = parse_fhir_datetime_range(value)
    except ValueError:
        return None
    return (low - _EPOCH) // timedelta(microseconds=1)


def micros_instant(micros: int) -> str:
    """The cursor as a ``_lastUpdated`` value, floored to the millisecond (``ge`` then overlaps
    the boundary instead of missing it on servers that keep milliseconds only)."""
    moment = _EPOCH + timedelta(microseconds=micros - micros % 1000)
    return moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def last_updated(resource: Mapping[str, Any]) -> int | None:
    """The resource's ``meta.lastUpdated`` in microseconds, if it has one."""
    meta = resource.get("meta")
    return instant_micros(meta.get("lastUpdated")) if isinstance(meta, dict) else None


def high_water(resources: Sequence[Mapping[str, Any]], since: int | None) -> int | None:
    """The cursor after ``resources`` were taken in: the highest lastUpdated, never lower."""
    seen = [m for m in (last_updated(r) for r in resources) if m is not None]
    if since is not None:
        seen.append(since)
    return max(seen) if seen else None


def search_params(
    resource_type: str, clinic_npi: str, since: int | None, count: int
) -> list[tuple[str, str]]:
    """The first page's query: addressed to the clinic, changed since ``since``, oldest first."""
    params = [(f"{ADDRESSEE[resource_type]}:identifier", f"{NPI_SYSTEM}|{clinic_npi}")]
    if resource_type == "Task":
        params.append(("code", TASK_FULFIL))
    if since is not None:
        params.append(("_lastUpdated", f"ge{micros_instant(since)}"))
    params += [("_sort", "_lastUpdated"), ("_count", str(count)), *_INCLUDES[resource_type]]
    return params


def absolute(reference: str, base: str) -> str:
    """A relative ``Type/id`` reference on the partner's server as an absolute URL."""
    return f"{base.rstrip('/')}/{reference}" if _RELATIVE.match(reference) else reference


def absolutize(resource: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A copy of ``resource`` whose relative references point at the partner's server."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            ref = node.get("reference")
            if isinstance(ref, str):
                out["reference"] = absolute(ref, base)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(copy.deepcopy(dict(resource)))


@dataclass(frozen=True)
class Page:
    """One searchset page: the matches (as sent), the included resources by absolute URL (made
    absolute), and the ``next`` link."""

    matches: list[dict[str, Any]] = field(default_factory=list)
    included: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_url: str | None = None


def read_page(bundle: Any, resource_type: str, base: str) -> Page:
    """Split a searchset Bundle; ValueError when it is not one."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ValueError("the answer is not a Bundle")
    if bundle.get("type") != "searchset":
        raise ValueError("the answer is not a searchset Bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise ValueError("Bundle.entry is not a list")
    page = Page(next_url=next_link(bundle))
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        rtype = resource.get("resourceType")
        if mode == "match" or (mode is None and rtype == resource_type):
            if rtype == resource_type:
                page.matches.append(resource)
        elif mode in (None, "include"):
            url = _full_url(entry, resource, base)
            page.included[url] = absolutize(resource, base)
    return page


def next_link(bundle: Mapping[str, Any]) -> str | None:
    """The Bundle's ``next`` link, if any."""
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


def _full_url(entry: Mapping[str, Any], resource: Mapping[str, Any], base: str) -> str:
    full = entry.get("fullUrl")
    if isinstance(full, str) and full.startswith(("http://", "https://")):
        return full
    return f"{base.rstrip('/')}/{resource['resourceType']}/{resource['id']}"


def _names_clinic(ref: Any, included: Mapping[str, Mapping[str, Any]], clinic_npi: str) -> bool:
    """True when a Reference names the clinic: by NPI identifier, or an Organization with it."""
    if not isinstance(ref, dict):
        return False
    candidates = [ref.get("identifier")]
    target = included.get(ref.get("reference") or "")
    if target is not None and target.get("resourceType") == "Organization":
        candidates.extend(target.get("identifier") or [])
    return any(
        isinstance(i, dict) and i.get("system") == NPI_SYSTEM and i.get("value") == clinic_npi
        for i in candidates
    )


def addressed_to_clinic(
    resource: Mapping[str, Any], included: Mapping[str, Mapping[str, Any]], clinic_npi: str
) -> bool:
    """True for a ServiceRequest whose performer, or a Task whose owner (or focus's performer),
    is the clinic. ``resource`` and ``included`` have absolute references (``absolutize``)."""
    if resource.get("resourceType") == "ServiceRequest":
        performers = resource.get("performer")
        return isinstance(performers, list) and any(
            _names_clinic(p, included, clinic_npi) for p in performers
        )
    if resource.get("resourceType") != "Task":
        return False
    if _names_clinic(resource.get("owner"), included, clinic_npi):
        return True
    focus = focus_url(resource)
    sr = included.get(focus) if focus else None
    return sr is not None and addressed_to_clinic(sr, included, clinic_npi)


def focus_url(task: Mapping[str, Any]) -> str | None:
    """The absolute URL of the ServiceRequest a (made absolute) Task's focus names, if it does."""
    focus = task.get("focus")
    ref = focus.get("reference") if isinstance(focus, dict) else None
    if not isinstance(ref, str) or not ref.startswith(("http://", "https://")):
        return None
    parts = ref.rstrip("/").split("/")
    return ref if len(parts) >= 2 and parts[-2] == "ServiceRequest" else None
