"""The FHIR R4 transaction Bundle a partner receives for one outbox event (pure, no I/O).

Every entry is keyed on a business identifier, never on our resource ids, so a re-sent Bundle
changes nothing at a conformant server (conditional requests of identical content):

* the Patient: conditional create (``POST`` + ``request.ifNoneExist``) on the clinic MRN;
* the Procedure, its Observations and Goals: conditional update
  (``PUT Type?identifier=system|value``) on their ``<base>/session`` or ``<base>/goal``
  identifier;
* the referral's Task: conditional update on our FILL identifier (``<base>/referral-task``)
  or, for an EHR's own Task, on the EHR's identifier.

Decisions:

* ``fullUrl`` is ``urn:uuid:`` + uuid5 of (type, system, value) of the entry's key identifier
  (``fhir.ids.stable_id``), so identical input gives identical bytes.
* References between entries are rewritten to the entries' fullUrls. A relative reference to a
  resource not sent (the therapist, the clinic, the ServiceRequest, earlier visits) would not
  resolve at the partner, so it becomes a logical reference (``type`` + ``identifier``, display
  kept) when the caller passed that resource in ``linked`` and it has an identifier; otherwise
  only ``type`` and ``display`` remain. Absolute, conditional and contained references are kept.
* ``id`` and ``meta.versionId``/``meta.lastUpdated`` are dropped (the partner assigns its own
  ids; an id in a conditional update's body that differs from the match is an error at some
  servers); everything else is kept as stored.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fhir_bridge.fhir.ids import stable_id
from fhir_bridge.fhir.npi import NPI_SYSTEM

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
#: a relative literal reference ``Type/id[/_history/vid]``
_RELATIVE = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$"
)

Resource = Mapping[str, Any]
_CONTAINERS = (dict, list)


class BundleInputError(ValueError):
    """A resource lacks what its entry is keyed on (a business identifier): a data problem."""


@dataclass(frozen=True)
class ClinicSystems:
    """The clinic's identifier systems under ``clinic_system_base``."""

    base: str

    @property
    def mrn(self) -> str:
        """Medical record numbers."""
        return f"{self.base}/mrn"

    @property
    def session(self) -> str:
        """Resources generated from session records."""
        return f"{self.base}/session"

    @property
    def goal(self) -> str:
        """Patient goals."""
        return f"{self.base}/goal"

    @property
    def referral_task(self) -> str:
        """FILL identifiers of the referral Tasks the clinic creates."""
        return f"{self.base}/referral-task"


@dataclass(frozen=True)
class _Entry:
    resource: Resource
    system: str
    value: str
    conditional_create: bool = False

    @property
    def key(self) -> str:
        return f"{self.resource['resourceType']}/{self.resource['id']}"

    @property
    def full_url(self) -> str:
        return "urn:uuid:" + stable_id(str(self.resource["resourceType"]), self.system, self.value)


def session_bundle(
    *,
    patient: Resource,
    procedure: Resource,
    observations: Sequence[Resource] = (),
    goals: Sequence[Resource] = (),
    task: Resource | None = None,
    linked: Mapping[str, Resource] | None = None,
    clinic_system_base: str,
) -> dict[str, Any]:
    """The Bundle of a ``session.documented`` event.

    ``linked`` maps ``Type/id`` to resources referenced but not sent (for logical references).
    Observations and Goals are ordered by their identifier, so input order does not matter.
    """
    systems = ClinicSystems(clinic_system_base)
    mrn = _identifier(patient, systems.mrn)
    if mrn is None:
        raise BundleInputError(f"Patient/{patient.get('id')} has no {systems.mrn} identifier")
    entries = [_Entry(patient, systems.mrn, mrn, conditional_create=True)]
    entries += sorted((_keyed(g, systems.goal) for g in _unique(goals)), key=_order)
    entries.append(_keyed(procedure, systems.session))
    entries += sorted((_keyed(o, systems.session) for o in _unique(observations)), key=_order)
    if task is not None:
        entries.append(_task_entry(task, systems))
    return _bundle(entries, linked or {}, systems)


def referral_bundle(
    *, task: Resource, linked: Mapping[str, Resource] | None = None, clinic_system_base: str
) -> dict[str, Any]:
    """The Bundle of a ``referral.*`` event: the referral's Task, by its identifier."""
    systems = ClinicSystems(clinic_system_base)
    return _bundle([_task_entry(task, systems)], linked or {}, systems)


def conditional_url(resource_type: str, system: str, value: str) -> str:
    """``Type?identifier=system|value`` with FHIR search escaping and percent-encoding."""
    return f"{resource_type}?{identifier_query(system, value)}"


def identifier_query(system: str, value: str) -> str:
    """``identifier=system|value`` (``\\``, ``,``, ``$``, ``|`` escaped, then URL-encoded)."""
    return f"identifier={_encode(system)}|{_encode(value)}"


def task_key(task: Resource, clinic_system_base: str) -> tuple[str, str] | None:
    """The identifier a Task's entry is keyed on: our FILL one, else the EHR's first one."""
    ours = _identifier(task, ClinicSystems(clinic_system_base).referral_task)
    if ours is not None:
        return ClinicSystems(clinic_system_base).referral_task, ours
    for ident in task.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            return str(ident["system"]), str(ident["value"])
    return None


def relative_references(resources: Iterable[Resource]) -> set[str]:
    """``Type/id`` of every relative literal reference in ``resources`` (contained excluded)."""
    found: set[str] = set()
    for resource in resources:
        if isinstance(resource, _CONTAINERS):
            _collect(resource, found)
    return found


# ----------------------------------------------------------------------------- internals


def _encode(part: str) -> str:
    escaped = part.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$")
    return quote(escaped.replace("|", "\\|"), safe=":/")


def _identifier(resource: Resource, system: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def _keyed(resource: Resource, system: str) -> _Entry:
    value = _identifier(resource, system)
    if value is None:
        raise BundleInputError(
            f"{resource.get('resourceType')}/{resource.get('id')} has no {system} identifier"
        )
    return _Entry(resource, system, value)


def _task_entry(task: Resource, systems: ClinicSystems) -> _Entry:
    key = task_key(task, systems.base)
    if key is None:
        raise BundleInputError(f"Task/{task.get('id')} has no identifier to key its entry on")
    return _Entry(task, *key)


def _unique(resources: Sequence[Resource]) -> list[Resource]:
    seen: set[tuple[Any, Any]] = set()
    out = []
    for r in resources:
        key = (r.get("resourceType"), r.get("id"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _order(entry: _Entry) -> tuple[str, str]:
    return entry.system, entry.value


def _collect(node: Any, found: set[str]) -> None:
    # only containers are descended into: most nodes are strings and numbers
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "contained":
                continue
            if key == "reference" and isinstance(value, str):
                match = _RELATIVE.match(value)
                if match:
                    found.add(f"{match.group(1)}/{match.group(2)}")
            elif isinstance(value, _CONTAINERS):
                _collect(value, found)
    else:
        for item in node:
            if isinstance(item, _CONTAINERS):
                _collect(item, found)


def _bundle(
    entries: list[_Entry], linked: Mapping[str, Resource], systems: ClinicSystems
) -> dict[str, Any]:
    local = {e.key: e.full_url for e in entries}
    out = []
    for entry in entries:
        body = _rewrite(_strip(entry.resource), local, linked, systems)
        resource_type = str(entry.resource["resourceType"])
        if entry.conditional_create:
            request = {
                "method": "POST",
                "url": resource_type,
                "ifNoneExist": identifier_query(entry.system, entry.value),
            }
        else:
            request = {
                "method": "PUT",
                "url": conditional_url(resource_type, entry.system, entry.value),
            }
        out.append({"fullUrl": entry.full_url, "resource": body, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def _strip(resource: Resource) -> dict[str, Any]:
    """A shallow copy without ``id`` and ``meta.versionId``/``meta.lastUpdated``.

    Shallow is enough: ``_rewrite`` then builds every dict and list of the entry anew (and
    copies contained resources and reference parts), so the output shares nothing mutable
    with the input.
    """
    body = {k: v for k, v in resource.items() if k != "id"}
    meta = {
        k: v for k, v in (body.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
    }
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    return body


def _rewrite(
    node: Any, local: Mapping[str, str], linked: Mapping[str, Resource], systems: ClinicSystems
) -> Any:
    """A copy of ``node`` with its relative references resolved (leaves are shared: they are
    strings, numbers and booleans, which nobody can change)."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            match = _RELATIVE.match(ref)
            if match:
                return _reference(
                    node, f"{match.group(1)}/{match.group(2)}", local, linked, systems
                )
        return {
            k: (
                copy.deepcopy(v)
                if k == "contained"
                else _rewrite(v, local, linked, systems)
                if isinstance(v, _CONTAINERS)
                else v
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            _rewrite(item, local, linked, systems) if isinstance(item, _CONTAINERS) else item
            for item in node
        ]
    return node


def _reference(
    node: Mapping[str, Any],
    key: str,
    local: Mapping[str, str],
    linked: Mapping[str, Resource],
    systems: ClinicSystems,
) -> dict[str, Any]:
    """One Reference: to an entry's fullUrl, else logical (by identifier), else type + display."""
    if key in local:
        return {**copy.deepcopy(dict(node)), "reference": local[key]}
    rest = {k: copy.deepcopy(v) for k, v in node.items() if k != "reference"}
    rest.setdefault("type", key.partition("/")[0])
    target = linked.get(key)
    ident = _logical_identifier(target, systems) if target is not None else None
    if ident is not None and "identifier" not in rest:
        rest["identifier"] = ident
    return rest


def _logical_identifier(resource: Resource, systems: ClinicSystems) -> dict[str, Any] | None:
    """The identifier a partner most likely knows the resource by.

    A ServiceRequest's placer (PLAC) identifier, then an NPI, then an identifier the clinic did
    not assign (the EHR's own), then any.
    """
    candidates = [
        i
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") and i.get("value")
    ]
    if not candidates:
        return None

    def rank(ident: Mapping[str, Any]) -> int:
        codes = {
            c.get("code")
            for c in (ident.get("type") or {}).get("coding", [])
            if isinstance(c, dict) and c.get("system") == V2_0203
        }
        if resource.get("resourceType") == "ServiceRequest" and "PLAC" in codes:
            return 0
        if ident.get("system") == NPI_SYSTEM:
            return 1
        if not str(ident.get("system")).startswith(systems.base + "/"):
            return 2
        return 3

    best = min(candidates, key=rank)  # min is stable: the first of the best rank wins
    return {k: copy.deepcopy(best[k]) for k in ("type", "system", "value") if k in best}
