"""A delivery Bundle in the shape a partner takes: split, ordered, transaction or batch (pure).

``mapping.delivery_bundle`` builds one ``transaction`` Bundle per outbox event; every entry is
conditional on a business identifier (``ifNoneExist`` or ``PUT Type?identifier=...``) and
entries refer to each other by their ``urn:uuid:`` fullUrls. Some partners take only so many
entries per Bundle (a Medplum server refuses a conditional transaction of more than 8), some
want ``batch``. ``shape_bundle`` returns the ORDERED list of Bundles to send:

* entries are ordered so that an entry comes after the entries it references (Patient, then
  Goals and the Procedure, then the Observations that are ``partOf`` it...); ties keep the
  builder's order, so identical input gives identical output;
* ``transaction``: the ordered entries are cut into parts of at most ``max_entries``. A
  reference to an entry of the same part stays its ``urn:uuid:`` fullUrl (resolved within the
  transaction); a reference to an entry of an earlier part becomes that entry's conditional
  reference (``Patient?identifier=system|value``: FHIR R4 http.html#trules, resolved by the
  server against what the earlier part wrote). One part: the Bundle is returned as built;
* ``batch``: batch entries may not depend on each other (FHIR R4: no interdependencies), so
  every reference to another entry becomes conditional, and an entry is placed in a later
  Bundle than every entry it references (dependency levels, each level cut into parts of at
  most ``max_entries``).

Every part stays idempotent: its entries are the builder's conditional creates and updates,
unchanged apart from references, so re-sending all parts changes nothing at the partner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from fhir_bridge.fhir import jsonio

BundleType = Literal["transaction", "batch"]
BUNDLE_TYPES: tuple[BundleType, ...] = ("transaction", "batch")
_CONTAINERS = (dict, list)


class SplitError(ValueError):
    """The Bundle cannot be shaped (an entry without a conditional request, a bad limit)."""


def conditional_reference(entry: Mapping[str, Any]) -> str:
    """The search URI that finds ``entry``'s resource at the partner once it is written:
    the PUT's conditional URL, or ``Type?`` + the POST's ``ifNoneExist``."""
    request = entry.get("request") or {}
    url = str(request.get("url") or "")
    if request.get("method") == "PUT" and "?" in url:
        return url
    if request.get("method") == "POST" and request.get("ifNoneExist"):
        return f"{url}?{request['ifNoneExist']}"
    raise SplitError(f"entry {entry.get('fullUrl')!r} is not a conditional create or update")


def shape_bundle(
    bundle: Mapping[str, Any], *, max_entries: int | None, bundle_type: BundleType
) -> list[dict[str, Any]]:
    """The Bundles to send, in order, for a partner taking ``max_entries`` entries per Bundle
    (None: any number) as ``bundle_type``; see the module docstring."""
    if max_entries is not None and max_entries < 1:
        raise SplitError("max_entries must be at least 1")
    if bundle_type not in BUNDLE_TYPES:
        raise SplitError(f"bundle_type must be one of {', '.join(BUNDLE_TYPES)}")
    entries = list(bundle.get("entry") or [])
    if bundle_type == "transaction" and (max_entries is None or len(entries) <= max_entries):
        return [dict(bundle)]
    targets = _targets(entries)
    order = _dependency_order(entries, targets)
    if bundle_type == "transaction":
        assert max_entries is not None
        parts = [order[i : i + max_entries] for i in range(0, len(order), max_entries)]
    else:
        parts = _levels(order, targets, max_entries)
    conditional = {e["fullUrl"]: conditional_reference(e) for e in entries if e.get("fullUrl")}
    out = []
    for part in parts:
        # in a batch no reference stays local; in a transaction, those within the part do
        local = (
            {entries[i]["fullUrl"] for i in part if entries[i].get("fullUrl")}
            if bundle_type == "transaction"
            else set()
        )
        rewrite = {url: ref for url, ref in conditional.items() if url not in local}
        shaped = [_rewritten(entries[i], rewrite) for i in part]
        out.append({"resourceType": "Bundle", "type": bundle_type, "entry": shaped})
    return out


def shape_payload(payload: bytes, *, max_entries: int | None, bundle_type: str) -> list[bytes]:
    """``shape_bundle`` on a stored payload: the bytes of each Bundle to send. A transaction
    that needs no split is sent as stored, byte for byte (it is not even parsed)."""
    if bundle_type == "transaction" and max_entries is None:
        return [payload]
    if bundle_type not in BUNDLE_TYPES:
        raise SplitError(f"bundle_type must be one of {', '.join(BUNDLE_TYPES)}")
    parts = shape_bundle(jsonio.loads(payload), max_entries=max_entries, bundle_type=bundle_type)
    if bundle_type == "transaction" and len(parts) == 1:
        return [payload]
    return [jsonio.dumps(part) for part in parts]


# ----------------------------------------------------------------------------- internals


def _targets(entries: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """For each entry, the indexes of the other entries it references (by fullUrl)."""
    index = {e["fullUrl"]: i for i, e in enumerate(entries) if e.get("fullUrl")}
    out = []
    for i, entry in enumerate(entries):
        refs: set[str] = set()
        _references(entry.get("resource") or {}, refs)
        out.append(sorted({index[r] for r in refs if r in index} - {i}))
    return out


def _references(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "contained":
                continue
            if key == "reference" and isinstance(value, str):
                found.add(value)
            elif isinstance(value, _CONTAINERS):
                _references(value, found)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, _CONTAINERS):
                _references(item, found)


def _dependency_order(entries: Sequence[Any], targets: Sequence[Sequence[int]]) -> list[int]:
    """Entry indexes, each after the entries it references; ties (and cycles, which a
    conditional reference cannot resolve anyway) keep the builder's order."""
    placed: list[int] = []
    done: set[int] = set()
    remaining = list(range(len(entries)))
    while remaining:
        ready = next((i for i in remaining if all(t in done for t in targets[i])), remaining[0])
        placed.append(ready)
        done.add(ready)
        remaining.remove(ready)
    return placed


def _levels(
    order: Sequence[int], targets: Sequence[Sequence[int]], max_entries: int | None
) -> list[list[int]]:
    """Batch parts: each entry one level after the deepest entry it references, every level
    cut into parts of at most ``max_entries`` (in ``order``)."""
    # a level is an index into ``levels`` (not a free number: any shift of it would group
    # the same entries), so an entry's level is at most one past the deepest level so far
    depth: dict[int, int] = {}
    levels: list[list[int]] = []
    for i in order:
        depth[i] = max((depth[t] + 1 for t in targets[i] if t in depth), default=0)
        if depth[i] == len(levels):
            levels.append([])
        levels[depth[i]].append(i)
    parts: list[list[int]] = []
    for members in levels:
        size = max_entries or len(members)
        parts += [members[k : k + size] for k in range(0, len(members), size)]
    return parts


def _rewritten(entry: Mapping[str, Any], rewrite: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``entry`` whose references to other parts' entries are conditional."""
    return {k: _rewrite_node(v, rewrite) if k == "resource" else _copy(v) for k, v in entry.items()}


def _rewrite_node(node: Any, rewrite: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "contained":
                out[key] = _copy(value)
            elif key == "reference" and isinstance(value, str):
                out[key] = rewrite.get(value, value)
            else:
                out[key] = _rewrite_node(value, rewrite)
        return out
    if isinstance(node, list):
        return [_rewrite_node(item, rewrite) for item in node]
    return node


def _copy(node: Any) -> Any:
    return _rewrite_node(node, {})
