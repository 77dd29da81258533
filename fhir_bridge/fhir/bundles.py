"""Bundles the read API answers with: searchset and history (plain dicts, pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson

from fhir_bridge.fhir.outcome import Issue, operation_outcome


class VersionLike(Protocol):
    """What a bundle entry needs to know about a stored version."""

    resource_type: str
    resource_id: str
    version_id: int
    deleted: bool
    content: bytes

    @property
    def etag(self) -> str: ...


def resource_json(version: VersionLike, elements: Sequence[str] | None, parse: Any) -> Any:
    """The entry's resource: the stored bytes spliced in as-is, or a subset for ``_elements``."""
    if not elements:
        return orjson.Fragment(version.content)
    return select_elements(parse(version.content), elements)


def select_elements(resource: dict[str, Any], elements: Sequence[str]) -> dict[str, Any]:
    """Keep only the named top-level elements (plus mandatory ones) and tag it SUBSETTED."""
    keep = {"resourceType", "id", "meta", *elements}
    subset = {k: v for k, v in resource.items() if k in keep}
    meta = dict(subset.get("meta") or {})
    tags = [*meta.get("tag", [])]
    tags.append(
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED",
            "display": "subsetted",
        }
    )
    meta["tag"] = tags
    subset["meta"] = meta
    return subset


def searchset(
    *,
    base_url: str,
    self_link: str,
    matches: Iterable[VersionLike],
    included: Iterable[VersionLike] = (),
    total: int | None = None,
    next_link: str | None = None,
    previous_link: str | None = None,
    issues: Sequence[Issue] = (),
    elements: Sequence[str] | None = None,
    parse: Any = None,
) -> dict[str, Any]:
    """A searchset Bundle; matches first, then included resources, then an outcome if any."""
    links = [{"relation": "self", "url": self_link}]
    if next_link:
        links.append({"relation": "next", "url": next_link})
    if previous_link:
        links.append({"relation": "previous", "url": previous_link})
    entries: list[dict[str, Any]] = []
    for mode, items in (("match", matches), ("include", included)):
        for v in items:
            entries.append(
                {
                    "fullUrl": f"{base_url}/{v.resource_type}/{v.resource_id}",
                    "resource": resource_json(v, elements if mode == "match" else None, parse),
                    "search": {"mode": mode},
                }
            )
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


def history_bundle(
    *,
    base_url: str,
    self_link: str,
    versions: Sequence[VersionLike],
    last_modified: Any,
    total: int | None = None,
    next_link: str | None = None,
) -> dict[str, Any]:
    """A history Bundle, newest version first, each entry with request and response.

    ``total`` counts every version that matches (default: those given); ``next_link`` pages on.
    """
    entries = []
    for v in versions:
        url = f"{v.resource_type}/{v.resource_id}"
        method = "DELETE" if v.deleted else ("POST" if v.version_id == 1 else "PUT")
        entry: dict[str, Any] = {"fullUrl": f"{base_url}/{url}"}
        if not v.deleted:
            entry["resource"] = orjson.Fragment(v.content)
        entry["request"] = {"method": method, "url": url if method != "POST" else v.resource_type}
        entry["response"] = {
            "status": "410 Gone"
            if v.deleted
            else ("201 Created" if method == "POST" else "200 OK"),
            "etag": v.etag,
            "lastModified": last_modified(v),
        }
        entries.append(entry)
    links = [{"relation": "self", "url": self_link}]
    if next_link:
        links.append({"relation": "next", "url": next_link})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(entries) if total is None else total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle
