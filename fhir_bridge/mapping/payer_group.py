"""A payer's member Group, computed from its Coverages (never stored, so always in step).

``Group/{id}`` has the id of the payer's Organization: one member entry per Coverage naming
that payer, with the Coverage's period; a member is ``inactive`` when the Coverage is not
active or its period does not contain today.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any, Protocol


class Member(Protocol):
    """What the Group needs of one Coverage."""

    patient_id: str
    coverage_id: str
    status: str
    period: dict[str, Any] | None


def _current(period: dict[str, Any] | None, today: date) -> bool:
    if not period:
        return True
    start, end = str(period.get("start") or "")[:10], str(period.get("end") or "")[:10]
    day = today.isoformat()
    return (not start or start <= day) and (not end or end >= day)


def payer_group(org_id: str, members: Iterable[Member], *, today: date) -> dict[str, Any]:
    """The Group resource of payer ``org_id``."""
    entries = []
    for m in members:
        entry: dict[str, Any] = {"entity": {"reference": f"Patient/{m.patient_id}"}}
        if m.period:
            entry["period"] = {k: m.period[k] for k in ("start", "end") if k in m.period}
        entry["inactive"] = not (m.status == "active" and _current(m.period, today))
        entries.append(entry)
    return {
        "resourceType": "Group",
        "id": org_id,
        "identifier": [
            {"system": "urn:fhir-bridge:payer-group", "value": org_id},
        ],
        "active": True,
        "type": "person",
        "actual": True,
        "name": f"Members of Organization/{org_id}",
        "managingEntity": {"reference": f"Organization/{org_id}"},
        "quantity": len({e["entity"]["reference"] for e in entries}),
        "member": entries,
    }
