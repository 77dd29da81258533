"""What changed between two versions of a referral, in words clinic staff read in the inbox.

Pure: two ServiceRequest dicts in, a list of short lines out ("note[0].text changed",
"quantityQuantity.value 8 -> 12", "requester.reference changed", "reasonCode[1] added").
Values are shown only when they are short codes or numbers; free text is only said to have
changed (it may hold clinical detail that belongs in the referral, not in a change list).
"""

from __future__ import annotations

from typing import Any

#: elements that change on every store and say nothing about the order
IGNORED = frozenset({"id", "meta", "text"})
#: a value shown as is: numbers, booleans, and strings this short without spaces
SHOWN_LENGTH = 24
#: more changed leaves than this under one element are reported as the element changing
COLLAPSE_AFTER = 3


def _leaves(node: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _leaves(value, f"{path}.{key}", out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _leaves(value, f"{path}[{i}]", out)
    else:
        out[path] = node


def _flat(resource: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if key not in IGNORED:
            _leaves(value, key, out)
    return out


def _shown(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str) and len(value) <= SHOWN_LENGTH and " " not in value:
        return value
    return None


def _element(path: str) -> str:
    """The element a leaf belongs to: ``note[0].text`` -> ``note[0]``."""
    return path.partition(".")[0]


def referral_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Field-level differences from ``old`` to ``new`` (empty when they say the same)."""
    before, after = _flat(old), _flat(new)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    per_element: dict[str, list[str]] = {}
    for path in changed:
        per_element.setdefault(_element(path), []).append(path)
    lines: list[str] = []
    for element, paths in per_element.items():
        if len(paths) > COLLAPSE_AFTER:
            gone = all(p not in after for p in paths)
            new_ = all(p not in before for p in paths)
            lines.append(f"{element} {'removed' if gone else 'added' if new_ else 'changed'}")
            continue
        lines.extend(_line(path, before, after) for path in paths)
    return lines


def _line(path: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    if path not in before:
        shown = _shown(after[path])
        return f"{path} added" + (f": {shown}" if shown is not None else "")
    if path not in after:
        return f"{path} removed"
    old, new = _shown(before[path]), _shown(after[path])
    if old is not None and new is not None:
        return f"{path} {old} -> {new}"
    return f"{path} changed"
