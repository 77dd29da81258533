"""Parse a FHIR search request (name/value pairs) into a typed SearchQuery, or refuse it.

Repeated parameters are AND-ed, comma-separated values OR-ed (``\\,`` is a literal comma).
Every problem found is reported in one FhirError(400); with ``lenient`` (Prefer:
handling=lenient) unknown parameters and modifiers are dropped with a warning instead.
Not supported, and refused as such: chained parameters, ``_has``, ``_include=*`` and
``:iterate``, ``_summary=text``, token ``:of-type``/``:in``/...

A bare id on a reference parameter with several target types (``subject=123``) is kept with
no type (``ReferenceValue.target_type`` None): the service resolves it against the store.
``ap`` widens the date by 10% of its distance from now (R4 search 3.1.1.4.2, "ap").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fhir_bridge.fhir.dates import parse_fhir_datetime_range
from fhir_bridge.fhir.outcome import FhirError, Issue, error, warning
from fhir_bridge.fhir.search_index import parse_reference
from fhir_bridge.fhir.search_params import SEARCH_PARAMS, SearchParam

DEFAULT_COUNT = 50
MAX_COUNT = 1000

TRANSPORT_PARAMS = frozenset({"_format", "_pretty"})
SPECIAL_PARAMS = ("_id", "_lastUpdated")
RESULT_PARAMS = frozenset(
    {"_count", "_sort", "_summary", "_elements", "_include", "_revinclude", "_total", "_cursor"}
)
#: Result parameters that may be given at most once.
SINGLE_RESULT_PARAMS = frozenset({"_count", "_sort", "_summary", "_elements", "_total", "_cursor"})

#: Modifiers per parameter type; reference parameters also take a target type (``:Patient``).
MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not", "text"}),
    "reference": frozenset({"missing", "identifier"}),
    "date": frozenset({"missing"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "special": frozenset(),
}
DATE_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
#: R4 search 3.1.1.4.2: "the recommended value for the approximation is 10% of the stated
#: value (or for a date, 10% of the gap between now and the date)"
APPROXIMATION = 0.1
SUMMARY_VALUES = frozenset({"true", "count", "data", "false"})
UNSUPPORTED_SUMMARY = frozenset({"text"})
TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})
SORT_SPECIALS = ("_lastUpdated", "_id")

_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]+")
_ELEMENT_RE = re.compile(r"[a-z][A-Za-z0-9]*")
_UNESCAPED_COMMA = re.compile(r"(?<!\\)((?:\\\\)*),")
_ESCAPE = re.compile(r"\\([\\,|$])")


@dataclass(frozen=True)
class TokenValue:
    """``code`` -> (None, code, False); ``sys|code``; ``|code`` (no system); ``sys|`` (any code)."""

    system: str | None
    code: str | None
    system_given: bool


@dataclass(frozen=True)
class ReferenceValue:
    """A reference to match: type and id (either may be None) and the absolute URL if given."""

    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass(frozen=True)
class DateValue:
    """A date criterion: prefix (eq ne gt lt ge le sa eb ap) and the range [low, high) in naive
    UTC; for ``ap`` the range is already widened, and a target matches when it overlaps it."""

    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class StringValue:
    """A string (or ``_id``) value as given, escapes removed."""

    value: str


SearchValue = TokenValue | ReferenceValue | DateValue | StringValue


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: its values are OR-ed; criteria of a query are AND-ed.

    ``type`` is the parameter type, ``special`` for _id/_lastUpdated, and ``token`` for a
    reference parameter searched with ``:identifier`` (matched against Reference.identifier).
    """

    name: str
    param: SearchParam | None
    type: str
    modifier: str | None
    values: tuple[SearchValue, ...]
    missing: bool | None = None


@dataclass(frozen=True)
class Include:
    """``_include``/``_revinclude``: follow ``source_type``'s reference parameter ``param``."""

    source_type: str
    param: str
    target_type: str | None
    iterate: bool = False


@dataclass(frozen=True)
class SortKey:
    """One ``_sort`` key."""

    name: str
    descending: bool


@dataclass(frozen=True)
class SearchQuery:
    """A parsed, validated search on one resource type."""

    resource_type: str
    criteria: tuple[Criterion, ...]
    count: int = DEFAULT_COUNT
    sort: tuple[SortKey, ...] = ()
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    total: str | None = None
    cursor: str | None = None
    issues: tuple[Issue, ...] = ()


class _Invalid(ValueError):
    """A value problem inside one parameter: becomes an error issue for that parameter."""

    def __init__(self, diagnostics: str, code: str = "invalid") -> None:
        super().__init__(diagnostics)
        self.code = code


# --- value syntax ------------------------------------------------------------------------------


def split_or(value: str) -> list[str]:
    """Split on commas not escaped by a backslash; escapes are kept for the caller."""
    parts, start = [], 0
    for match in _UNESCAPED_COMMA.finditer(value):
        end = match.end() - 1
        parts.append(value[start:end])
        start = match.end()
    parts.append(value[start:])
    return parts


def unescape(value: str) -> str:
    """Remove search escapes: ``\\,`` ``\\|`` ``\\$`` ``\\\\``; any other backslash is invalid."""
    if "\\" not in value:
        return value
    if "\\" in _ESCAPE.sub("", value):
        raise _Invalid("A backslash may only escape \\, ',', '|' or '$'")
    return _ESCAPE.sub(r"\1", value)


def _split_token(raw: str) -> tuple[str, str] | None:
    """Split ``system|code`` at the first unescaped bar; None when there is none."""
    i = 0
    while i < len(raw):
        if raw[i] == "\\":
            i += 2
            continue
        if raw[i] == "|":
            return raw[:i], raw[i + 1 :]
        i += 1
    return None


def parse_token(raw: str, *, text: bool = False) -> TokenValue:
    """A token value (escapes still in ``raw``); ``text`` keeps the whole value as the code."""
    if text:
        return TokenValue(None, unescape(raw), False)
    split = _split_token(raw)
    if split is None:
        return TokenValue(None, unescape(raw), False)
    system, code = unescape(split[0]) or None, unescape(split[1]) or None
    if system is None and code is None:
        raise _Invalid("A token needs a system or a code around '|'")
    return TokenValue(system, code, True)


def utcnow() -> datetime:
    """Now, naive UTC (the store's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def parse_date(raw: str, now: datetime | None = None) -> DateValue:
    """``[prefix]date``: eq ne gt lt ge le sa eb ap, default eq.

    ``ap`` (approximately): the value's range widened on both sides by 10% of the gap between
    ``now`` and the value (at least the value's own precision: ``ap2026`` is 2026 itself).
    """
    prefix, rest = "eq", raw
    if raw[:2].isalpha():
        prefix, rest = raw[:2], raw[2:]
        if prefix not in DATE_PREFIXES:
            raise _Invalid(
                f"Unknown date prefix '{prefix}' (use one of eq ne gt lt ge le sa eb ap)"
            )
    try:
        low, high = parse_fhir_datetime_range(rest)
    except ValueError:
        raise _Invalid(f"'{raw}' is not a valid date, dateTime or instant") from None
    if prefix == "ap":
        low, high = approximate(low, high, now or utcnow())
    return DateValue(prefix, low, high)


def approximate(low: datetime, high: datetime, now: datetime) -> tuple[datetime, datetime]:
    """[low, high) widened by APPROXIMATION of its distance from ``now`` on each side."""
    distance = max(abs(now - low), abs(now - high))
    margin = distance * APPROXIMATION
    earliest = low - margin if low - datetime.min > margin else datetime.min
    latest = high + margin if datetime.max - high > margin else datetime.max
    return earliest, latest


def parse_reference_value(
    raw: str, param: SearchParam, type_modifier: str | None
) -> ReferenceValue:
    """``Type/id``, a bare ``id`` (type from the modifier or the only target) or an absolute URL."""
    value = unescape(raw)
    if "://" in value:
        target_type, target_id = parse_reference(value)
        url: str | None = value
    elif _ID_RE.fullmatch(value):
        target_type, target_id, url = _bare_id_type(param, type_modifier), value, None
    else:
        target_type, target_id = parse_reference(value)
        url = None
        if target_type is None:
            raise _Invalid(f"'{value}' is not a reference (Type/id, id or absolute URL)")
    if target_type is not None:
        _check_target(param, type_modifier, target_type)
    return ReferenceValue(target_type, target_id, url)


def _bare_id_type(param: SearchParam, type_modifier: str | None) -> str | None:
    """The type of a bare id: the modifier's, the only target, or None (resolved later)."""
    if type_modifier:
        return type_modifier
    if len(param.targets) == 1:
        return param.targets[0]
    return None


def _check_target(param: SearchParam, type_modifier: str | None, target_type: str) -> None:
    if type_modifier and target_type != type_modifier:
        raise _Invalid(f"A {target_type} reference does not match the modifier :{type_modifier}")
    if param.targets and target_type not in param.targets:
        raise _Invalid(f"'{param.name}' cannot refer to {target_type}")


def parse_missing(raw: str) -> bool:
    """The value of ``:missing``: true or false."""
    if raw not in ("true", "false"):
        raise _Invalid(":missing takes true or false")
    return raw == "true"


# --- the parser ---------------------------------------------------------------------------------


@dataclass
class _State:
    """What parsing has gathered so far; turned into a SearchQuery at the end."""

    resource_type: str
    params: dict[str, SearchParam]
    lenient: bool
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    count: int = DEFAULT_COUNT
    sort: tuple[SortKey, ...] = ()
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    total: str | None = None
    cursor: str | None = None
    now: datetime | None = None

    def unknown(self, key: str, diagnostics: str) -> None:
        """An unknown/unsupported parameter or modifier: error, or warning when lenient."""
        if self.lenient:
            self.warnings.append(warning("not-supported", f"{diagnostics}; ignored", key))
        else:
            self.errors.append(error("not-supported", diagnostics, key))


def parse_search(
    resource_type: str,
    params: Iterable[tuple[str, str]],
    *,
    lenient: bool = False,
    now: datetime | None = None,
) -> SearchQuery:
    """Parse search parameters for ``resource_type``; raises FhirError(400) listing every problem.

    An unknown resource type is a FhirError(404). ``now`` (default: the clock) anchors ``ap``.
    """
    if resource_type not in SEARCH_PARAMS:
        raise FhirError(
            404, error("not-supported", f"Resource type {resource_type} is not searchable")
        )
    state = _State(resource_type, SEARCH_PARAMS[resource_type], lenient, now=now or utcnow())
    for key, value in params:
        _parse_one(state, key, value)
    if state.errors:
        raise FhirError(400, state.errors)
    return SearchQuery(
        resource_type=resource_type,
        criteria=tuple(state.criteria),
        count=state.count,
        sort=state.sort,
        summary=state.summary,
        elements=state.elements,
        includes=tuple(dict.fromkeys(state.includes)),
        revincludes=tuple(dict.fromkeys(state.revincludes)),
        total=state.total,
        cursor=state.cursor,
        issues=tuple(state.warnings),
    )


def _parse_one(state: _State, key: str, value: str) -> None:
    name, _, modifier = key.partition(":")
    if name in TRANSPORT_PARAMS:
        return
    if name in RESULT_PARAMS:
        _result_param(state, key, name, modifier or None, value)
    elif "." in key:
        state.unknown(key, f"Chained search parameters are not supported: '{key}'")
    elif name in SPECIAL_PARAMS or name in state.params:
        _criterion(state, key, name, modifier or None, value)
    else:
        supported = ", ".join(sorted([*SPECIAL_PARAMS, *state.params]))
        state.unknown(
            key,
            f"Unknown search parameter '{name}' for {state.resource_type}. Supported: {supported}",
        )


# --- criteria -----------------------------------------------------------------------------------


def _criterion(state: _State, key: str, name: str, modifier: str | None, value: str) -> None:
    param = state.params.get(name)
    ptype = "special" if param is None else param.type
    if modifier is not None and not _modifier_allowed(ptype, param, modifier):
        allowed = ", ".join(sorted(MODIFIERS[ptype])) or "none"
        if ptype == "reference" and param is not None:
            allowed += f", or a target type ({', '.join(param.targets) or 'any'})"
        state.unknown(key, f"Unknown modifier ':{modifier}' on '{name}' (supported: {allowed})")
        return
    try:
        crit = _build_criterion(name, param, ptype, modifier, value, state.now)
    except _Invalid as exc:
        state.errors.append(error(exc.code, f"{key}={value}: {exc}", key))
        return
    if crit is not None:
        state.criteria.append(crit)


def _modifier_allowed(ptype: str, param: SearchParam | None, modifier: str) -> bool:
    if modifier in MODIFIERS[ptype]:
        return True
    if ptype != "reference" or param is None or not _TYPE_RE.fullmatch(modifier):
        return False
    return modifier in param.targets if param.targets else modifier in SEARCH_PARAMS


def _build_criterion(
    name: str,
    param: SearchParam | None,
    ptype: str,
    modifier: str | None,
    value: str,
    now: datetime | None = None,
) -> Criterion | None:
    """The criterion for one occurrence; None when its value is empty (ignored)."""
    if modifier == "missing":
        return Criterion(name, param, ptype, modifier, (), missing=parse_missing(value))
    pieces = [p for p in split_or(value) if p]
    if not pieces:
        return None
    if ptype == "reference" and modifier == "identifier":
        return Criterion(name, param, "token", modifier, tuple(parse_token(p) for p in pieces))
    parse = _value_parser(name, param, ptype, modifier, now)
    return Criterion(name, param, ptype, modifier, tuple(parse(p) for p in pieces))


def _value_parser(
    name: str,
    param: SearchParam | None,
    ptype: str,
    modifier: str | None,
    now: datetime | None = None,
) -> Callable[[str], SearchValue]:
    if name == "_id":
        return _parse_id
    if name == "_lastUpdated" or ptype == "date":
        return lambda raw: parse_date(raw, now)
    if ptype == "token":
        return lambda raw: parse_token(raw, text=modifier == "text")
    if ptype == "reference":
        assert param is not None
        return lambda raw: parse_reference_value(raw, param, modifier)
    return lambda raw: StringValue(unescape(raw))


def _parse_id(raw: str) -> StringValue:
    value = unescape(raw)
    if not _ID_RE.fullmatch(value):
        raise _Invalid(f"'{value}' is not a valid resource id")
    return StringValue(value)


# --- result parameters --------------------------------------------------------------------------


def _result_param(state: _State, key: str, name: str, modifier: str | None, value: str) -> None:
    if modifier is not None and not (modifier == "iterate" and name in ("_include", "_revinclude")):
        state.unknown(key, f"Unknown modifier ':{modifier}' on '{name}'")
        return
    if name in SINGLE_RESULT_PARAMS:
        if name in state.seen:
            state.errors.append(error("invalid", f"'{name}' may be given only once", key))
            return
        state.seen.add(name)
    try:
        _RESULT_HANDLERS[name](state, value, modifier)
    except _Invalid as exc:
        state.errors.append(error(exc.code, f"{key}={value}: {exc}", key))


def _count(state: _State, value: str, _modifier: str | None) -> None:
    if not (value.isascii() and value.isdigit()):
        raise _Invalid("_count must be a whole number of 0 or more")
    count = int(value) if len(value) <= 9 else MAX_COUNT + 1  # int() refuses 4,301+ digits
    if count > MAX_COUNT:
        state.warnings.append(
            warning(
                "too-costly", f"_count={count} exceeds {MAX_COUNT}; using {MAX_COUNT}", "_count"
            )
        )
        count = MAX_COUNT
    state.count = count


def _sort(state: _State, value: str, _modifier: str | None) -> None:
    allowed = [*SORT_SPECIALS, *(n for n, p in state.params.items() if p.type == "date")]
    keys = []
    for raw in value.split(","):
        descending = raw.startswith("-")
        name = raw[1:] if descending else raw
        if name not in allowed:
            raise _Invalid(
                f"Cannot sort by '{name}' (sortable: {', '.join(allowed)})", "not-supported"
            )
        keys.append(SortKey(name, descending))
    state.sort = tuple(keys)


def _summary(state: _State, value: str, _modifier: str | None) -> None:
    if value in UNSUPPORTED_SUMMARY:
        raise _Invalid(
            f"_summary={value} is not supported (use true, count, data or false)",
            "not-supported",
        )
    if value not in SUMMARY_VALUES:
        raise _Invalid("_summary takes true, count, data or false")
    state.summary = value


def _elements(state: _State, value: str, _modifier: str | None) -> None:
    names = []
    for raw in value.split(","):
        name = raw.strip().removeprefix(f"{state.resource_type}.")
        if not _ELEMENT_RE.fullmatch(name):
            raise _Invalid(f"'{raw}' is not an element name")
        names.append(name)
    state.elements = tuple(dict.fromkeys(names))


def _total(state: _State, value: str, _modifier: str | None) -> None:
    if value not in TOTAL_VALUES:
        raise _Invalid("_total takes none, estimate or accurate")
    state.total = value


def _cursor(state: _State, value: str, _modifier: str | None) -> None:
    state.cursor = value


def _include(state: _State, value: str, modifier: str | None) -> None:
    source, param, target = _include_parts(value, modifier)
    if source != state.resource_type:
        raise _Invalid(f"_include must start with the searched type {state.resource_type}")
    ref = _reference_param(source, param)
    if target is not None and not _may_target(ref, target):
        raise _Invalid(f"{source}:{param} cannot refer to {target}")
    state.includes.append(Include(source, param, target))


def _revinclude(state: _State, value: str, modifier: str | None) -> None:
    source, param, target = _include_parts(value, modifier)
    if source not in SEARCH_PARAMS:
        raise _Invalid(f"Resource type {source} is not supported", "not-supported")
    ref = _reference_param(source, param)
    if target is not None and target != state.resource_type:
        raise _Invalid(f"_revinclude target type must be {state.resource_type}")
    if not _may_target(ref, state.resource_type):
        raise _Invalid(f"{source}:{param} cannot refer to {state.resource_type}")
    state.revincludes.append(Include(source, param, target))


def _include_parts(value: str, modifier: str | None) -> tuple[str, str, str | None]:
    if modifier == "iterate":
        raise _Invalid(":iterate is not supported", "not-supported")
    if value == "*":
        raise _Invalid("Wildcard includes are not supported", "not-supported")
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts) or not _TYPE_RE.fullmatch(parts[0]):
        raise _Invalid("Expected Type:parameter or Type:parameter:TargetType")
    if len(parts) == 3 and not _TYPE_RE.fullmatch(parts[2]):
        raise _Invalid(f"'{parts[2]}' is not a resource type")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _reference_param(source: str, name: str) -> SearchParam:
    param = SEARCH_PARAMS[source].get(name)
    if param is None or param.type != "reference":
        raise _Invalid(f"'{name}' is not a reference search parameter of {source}")
    return param


def _may_target(param: SearchParam, target: str) -> bool:
    return target in param.targets if param.targets else target in SEARCH_PARAMS


_RESULT_HANDLERS: dict[str, Callable[[_State, str, str | None], None]] = {
    "_count": _count,
    "_sort": _sort,
    "_summary": _summary,
    "_elements": _elements,
    "_total": _total,
    "_cursor": _cursor,
    "_include": _include,
    "_revinclude": _revinclude,
}
