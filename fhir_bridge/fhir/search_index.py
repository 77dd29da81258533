"""What the store indexes for one resource version: its search-parameter values, typed.

``extract_index`` walks each supported parameter's element paths in the resource JSON and
turns what it finds into token, reference, date and string entries. It runs on every write,
so the paths are split once at import and the walk is plain dict/list traversal. Values it
cannot read are skipped: the resource was validated before it got here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from fhir_bridge.fhir.dates import MAX_DT, MIN_DT, parse_fhir_datetime_range
from fhir_bridge.fhir.search_params import INDEXED_PARAMS, SearchParam


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """A code, identifier or status; ``text`` is the normalized display/text for ``:text``."""

    param: str
    system: str | None
    code: str | None
    text: str | None


@dataclass(frozen=True, slots=True)
class ReferenceEntry:
    """A reference as found (``reference``), with target type and id when it is a literal one."""

    param: str
    target_type: str | None
    target_id: str | None
    reference: str


@dataclass(frozen=True, slots=True)
class DateEntry:
    """A date, dateTime, instant, Period or Timing as a naive UTC half-open range."""

    param: str
    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class StringEntry:
    """A string value, normalized for default/contains matching and exact for ``:exact``."""

    param: str
    normalized: str
    exact: str


@dataclass(frozen=True, slots=True)
class IndexEntries:
    """Everything one resource version contributes to the search index."""

    tokens: tuple[TokenEntry, ...] = ()
    references: tuple[ReferenceEntry, ...] = ()
    dates: tuple[DateEntry, ...] = ()
    strings: tuple[StringEntry, ...] = ()


EMPTY = IndexEntries()

# Type/id, optionally /_history/vid, at the end of a relative or absolute reference.
_LITERAL_REF = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_HUMAN_NAME_PARTS = ("family", "given", "text", "prefix", "suffix")


@lru_cache(maxsize=16384)
def normalize_string(value: str) -> str:
    """Case-folded, accent-stripped, whitespace-collapsed form used for string matching."""
    if value.isascii():
        return " ".join(value.lower().split())
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def parse_reference(reference: str) -> tuple[str | None, str | None]:
    """(type, id) of a relative or absolute literal reference; (None, None) otherwise."""
    if reference.startswith(("#", "urn:")):
        return None, None
    match = _LITERAL_REF.search(reference)
    if match is None:
        return None, None
    if "/" in reference[: match.start("type")] and "://" not in reference:
        return None, None  # relative references are exactly Type/id
    return match.group("type"), match.group("id")


def _walk(resource: dict[str, Any], segments: tuple[str, ...]) -> list[Any]:
    """Every value at the dotted path in ``resource``, flattening lists on the way."""
    current: list[Any] = [resource]
    for segment in segments:
        found: list[Any] = []
        for node in current:
            if isinstance(node, dict):
                child = node.get(segment)
                if isinstance(child, list):
                    found.extend(child)
                elif child is not None:
                    found.append(child)
        if not found:
            return found
        current = found
    return current


# --- tokens ----------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return normalize_string(value) if isinstance(value, str) and value else None


def _tokens(value: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    """(system, code, text) triples of a code, Coding, CodeableConcept or Identifier."""
    if isinstance(value, str):
        yield None, value, None
        return
    if not isinstance(value, dict):
        return
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        yield from _concept_tokens(value)
    elif "value" in value:
        type_text = (
            value.get("type", {}).get("text") if isinstance(value.get("type"), dict) else None
        )
        yield value.get("system"), value["value"], _text(type_text)
    elif "code" in value or "system" in value:
        yield value.get("system"), value.get("code"), _text(value.get("display"))


def _concept_tokens(concept: dict[str, Any]) -> Iterator[tuple[str | None, str | None, str | None]]:
    """One triple per coding (text: its display, else the concept's text), plus the text alone."""
    concept_text = _text(concept.get("text"))
    texts = set()
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and ("code" in coding or "system" in coding):
            text = _text(coding.get("display")) or concept_text
            texts.add(text)
            yield coding.get("system"), coding.get("code"), text
    if concept_text and concept_text not in texts:
        yield None, None, concept_text


# --- dates -----------------------------------------------------------------------------------


def _range(value: Any) -> tuple[datetime, datetime] | None:
    try:
        return parse_fhir_datetime_range(value)
    except ValueError:
        return None


def _date_range(value: Any) -> tuple[datetime, datetime] | None:
    """Range of a date/dateTime/instant, Period (open ends are MIN_DT/MAX_DT) or Timing."""
    if isinstance(value, str):
        return _range(value)
    if not isinstance(value, dict):
        return None
    if "start" in value or "end" in value:
        return _period_range(value)
    return _timing_range(value)


def _period_range(period: dict[str, Any]) -> tuple[datetime, datetime] | None:
    start, end = period.get("start"), period.get("end")
    low_range = _range(start) if start is not None else (MIN_DT, MIN_DT)
    high_range = _range(end) if end is not None else (MAX_DT, MAX_DT)
    if low_range is None or high_range is None:
        return None
    return low_range[0], high_range[1]


def _timing_range(timing: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """Outer limits of a Timing: its events and repeat.boundsPeriod (schedule ignored)."""
    ranges = [r for r in map(_range, timing.get("event") or ()) if r is not None]
    repeat = timing.get("repeat")
    if isinstance(repeat, dict) and isinstance(repeat.get("boundsPeriod"), dict):
        bounds = _period_range(repeat["boundsPeriod"])
        if bounds is not None:
            ranges.append(bounds)
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


# --- strings ---------------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    """The strings of a string or HumanName (family, each given, text, prefix, suffix)."""
    if isinstance(value, str):
        if value.strip():
            yield value
        return
    if isinstance(value, dict):
        for part in _HUMAN_NAME_PARTS:
            item = value.get(part)
            for text in item if isinstance(item, list) else (item,):
                if isinstance(text, str) and text.strip():
                    yield text


# --- per-parameter extraction -------------------------------------------------------------------


class _Collector:
    """Deduplicating accumulator of raw entry tuples, turned into IndexEntries at the end."""

    __slots__ = ("dates", "references", "strings", "tokens")

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, str | None, str | None, str | None], None] = {}
        self.references: dict[tuple[str, str | None, str | None, str], None] = {}
        self.dates: dict[tuple[str, datetime, datetime], None] = {}
        self.strings: dict[tuple[str, str, str], None] = {}

    def entries(self) -> IndexEntries:
        """The entries, fitted to the index columns (see ``TOKEN_MAX`` and friends)."""
        return IndexEntries(
            tokens=tuple(TokenEntry(*t) for t in self.tokens if _token_fits(t)),
            references=tuple(
                ReferenceEntry(*_fit_reference(r))
                for r in self.references
                if len(r[3]) <= REFERENCE_MAX
            ),
            dates=tuple(DateEntry(*d) for d in self.dates),
            strings=tuple(
                StringEntry(name, norm[:STRING_MAX], exact[:STRING_MAX])
                for name, norm, exact in self.strings
            ),
        )


#: Column sizes of the index tables. A token system or code longer than TOKEN_MAX, or a
#: reference longer than REFERENCE_MAX, is not indexed (such a value cannot be searched for);
#: strings are indexed by their first STRING_MAX characters (prefix search still works).
TOKEN_MAX, REFERENCE_MAX, STRING_MAX, ID_MAX = 512, 1024, 1024, 64


def _token_fits(entry: tuple[str, str | None, str | None, str | None]) -> bool:
    _, system, code, _ = entry
    return (system is None or len(system) <= TOKEN_MAX) and (code is None or len(code) <= TOKEN_MAX)


def _fit_reference(
    entry: tuple[str, str | None, str | None, str],
) -> tuple[str, str | None, str | None, str]:
    name, target_type, target_id, reference = entry
    if (target_type and len(target_type) > ID_MAX) or (target_id and len(target_id) > ID_MAX):
        return name, None, None, reference
    return entry


def _collect_token(out: _Collector, param: SearchParam, value: Any) -> None:
    for system, code, text in _tokens(value):
        if code is not None or system is not None or text is not None:
            out.tokens[(param.name, system, code, text)] = None


def _collect_reference(out: _Collector, param: SearchParam, value: Any) -> None:
    if not isinstance(value, dict):
        return
    reference = value.get("reference")
    if isinstance(reference, str) and reference:
        target_type, target_id = parse_reference(reference)
        if param.where_type is None or target_type == param.where_type:
            out.references[(param.name, target_type, target_id, reference)] = None
    # Reference.identifier goes to the token index, under the same name, for :identifier.
    identifier = value.get("identifier")
    if not isinstance(identifier, dict) or identifier.get("value") is None:
        return
    if param.where_type is None or value.get("type") == param.where_type:
        out.tokens[(param.name, identifier.get("system"), identifier["value"], None)] = None


def _collect_date(out: _Collector, param: SearchParam, value: Any) -> None:
    found = _date_range(value)
    if found is not None:
        out.dates[(param.name, found[0], found[1])] = None


def _collect_string(out: _Collector, param: SearchParam, value: Any) -> None:
    for text in _strings(value):
        out.strings[(param.name, normalize_string(text), text)] = None


_COLLECTORS: dict[str, Callable[[_Collector, SearchParam, Any], None]] = {
    "token": _collect_token,
    "reference": _collect_reference,
    "date": _collect_date,
    "string": _collect_string,
}

_Plan = tuple[tuple[SearchParam, tuple[tuple[str, ...], ...], Callable[..., None]], ...]


def _plan(params: dict[str, SearchParam]) -> _Plan:
    return tuple(
        (param, tuple(tuple(path.split(".")) for path in param.paths), _COLLECTORS[param.type])
        for param in params.values()
    )


#: Per resource type: each parameter with its pre-split paths and its collector.
PLANS: dict[str, _Plan] = {rt: _plan(params) for rt, params in INDEXED_PARAMS.items()}


def extract_index(resource: dict[str, Any]) -> IndexEntries:
    """Index entries of ``resource`` for every search parameter of its type (deduplicated)."""
    plan = PLANS.get(resource.get("resourceType", ""))
    if not plan:
        return EMPTY
    out = _Collector()
    for param, paths, collect in plan:
        for segments in paths:
            for value in _walk(resource, segments):
                try:
                    collect(out, param, value)
                except (AttributeError, TypeError, ValueError):
                    continue  # a malformed value is not searchable; never fail the write
    return out.entries()
