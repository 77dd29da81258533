"""How the patient changed: per measure, first vs latest pre-treatment value across visits.

Pure: visit Observations in, summary Observations out. Each summary carries the change as its
value (same UCUM unit), the first and latest values as components, the two source
Observations in ``derivedFrom``, and a one-line note a reviewer can read as is. Its code is
text only: there is no standard code for "change in X", and we never invent one.
"""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

PHASE_EXTENSION_SUFFIX = "/StructureDefinition/assessment-phase"


def _phase(obs: dict[str, Any]) -> str | None:
    for ext in obs.get("extension", []):
        if str(ext.get("url", "")).endswith(PHASE_EXTENSION_SUFFIX):
            return ext.get("valueCode")
    return None


def _key(obs: dict[str, Any]) -> tuple[str, str]:
    codings = obs.get("code", {}).get("coding", [])
    code = "|".join(f"{c.get('system')}#{c.get('code')}" for c in codings)
    site = obs.get("bodySite", {}).get("text", "")
    return code, site


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(obs: dict[str, Any]) -> str:
    text = obs.get("code", {}).get("text") or "Measure"
    site = obs.get("bodySite", {}).get("text")
    return f"{text} ({site})" if site else text


def _summary(n: int, first: dict[str, Any], latest: dict[str, Any], visits: int) -> dict[str, Any]:
    q0, q1 = first["valueQuantity"], latest["valueQuantity"]
    change = q1["value"] - q0["value"]
    change = round(change, 6) if isinstance(change, float) else change
    unit = {k: q1[k] for k in ("unit", "system", "code") if k in q1}
    label = _label(latest)
    d0, d1 = first["effectiveDateTime"][:10], latest["effectiveDateTime"][:10]
    sign = "+" if change > 0 else ""
    line = (
        f"{label}: {_number(q0['value'])} -> {_number(q1['value'])} {q1.get('unit', '')}"
        f" (change {sign}{_number(change)}) over {visits} pre-treatment measurement(s),"
        f" {d0} to {d1}"
    )
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"outcome-change-{n}",
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(line)}</p></div>',
        },
        "status": "final",
        "code": {"text": f"Change in {label}, first to latest pre-treatment value"},
        "subject": latest["subject"],
        "effectivePeriod": {
            "start": first["effectiveDateTime"],
            "end": latest["effectiveDateTime"],
        },
        "valueQuantity": {"value": change, **unit},
        "derivedFrom": [
            {"reference": f"Observation/{first['id']}"},
            {"reference": f"Observation/{latest['id']}"},
        ],
        "component": [
            {
                "code": {**latest["code"], "text": f"First pre-treatment value ({d0})"},
                "valueQuantity": q0,
            },
            {
                "code": {**latest["code"], "text": f"Latest pre-treatment value ({d1})"},
                "valueQuantity": q1,
            },
        ],
        "note": [{"text": line}],
    }
    for key in ("category", "bodySite"):
        if key in latest:
            body[key] = latest[key]
    return body


def outcome_changes(observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary Observation per measure (and body site) with a pre-treatment value."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for obs in observations:
        quantity = obs.get("valueQuantity", {})
        if (
            _phase(obs) == "pre"
            and isinstance(quantity.get("value"), int | float)
            and obs.get("effectiveDateTime")
        ):
            groups[_key(obs)].append(obs)
    out = []
    for n, key in enumerate(sorted(groups), start=1):
        series = sorted(groups[key], key=lambda o: (o["effectiveDateTime"], o["id"]))
        out.append(_summary(n, series[0], series[-1], len(series)))
    return out
