"""The code mappings of ``mappings/`` as frozen lookup tables, and the strict loader of them.

The tables are data (YAML, see ``mappings/README.md``); this module only knows their shape and
the rules a file must obey. Every broken file raises :class:`MappingError` naming the file and
the entry. Nothing is cached: the app loads the tables once at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import yaml

from fhir_bridge.mapping.code_checks import is_cpt_code, is_loinc_code, is_snomed_concept_id

if TYPE_CHECKING:
    from fhir_bridge.mapping.mcid import Mcid

#: the ``mappings/`` folder of a repository checkout (where clinics edit the tables)
REPOSITORY_MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"
#: the copy an installed wheel carries (``setup.py`` puts it there)
PACKAGED_MAPPINGS_DIR = Path(__file__).resolve().parents[1] / "_mappings"


def default_mappings_dir() -> Path:
    """The repository's ``mappings/`` when running from a checkout, else the wheel's copy."""
    if (REPOSITORY_MAPPINGS_DIR / "techniques.yaml").is_file():
        return REPOSITORY_MAPPINGS_DIR
    return PACKAGED_MAPPINGS_DIR


#: the mappings the bridge loads unless told otherwise (FHIR_BRIDGE_MAPPINGS_DIR)
DEFAULT_MAPPINGS_DIR = default_mappings_dir()

CPT = "http://www.ama-assn.org/go/cpt"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
#: the standard code systems a mapping file may name
KNOWN_SYSTEMS = frozenset({CPT, SNOMED, LOINC, UCUM, OBSERVATION_CATEGORY, US_CORE_CATEGORY})
CATEGORY_SYSTEMS = frozenset({OBSERVATION_CATEGORY, US_CORE_CATEGORY})

#: FHIR R4 ConceptMap equivalences a mapped code may declare (no code = ``unmatched``)
EQUIVALENCES = frozenset(
    {"relatedto", "equivalent", "equal", "wider", "subsumes", "narrower", "specializes", "inexact"}
)
#: R4 invariant cmd-1: these equivalences need a comment (our ``note``)
EQUIVALENCES_NEEDING_NOTE = frozenset({"narrower", "inexact"})

KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
FHIR_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
US_CORE_PROFILE_RE = re.compile(
    r"http://hl7\.org/fhir/us/core/StructureDefinition/us-core-[a-z0-9-]+"
)


@dataclass(frozen=True)
class Code:
    """A standard code, with the URL of the source where it was verified."""

    system: str
    code: str
    display: str
    source: str
    #: FHIR R4 ConceptMap equivalence of the clinic concept to this code
    equivalence: str = "equivalent"
    #: why the mapping is what it is (ConceptMap target comment)
    note: str = ""

    def coding(self) -> dict[str, str]:
        """As a FHIR Coding."""
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class Technique:
    """A massage modality: its billing code (CPT) and, only where verified, SNOMED CT."""

    key: str
    display: str
    billing: Code | None  # CPT; None = no verified code (e.g. cupping)
    snomed: Code | None
    timed: bool  # billed in 15-minute units (8-minute rule)
    definition: str = ""


@dataclass(frozen=True)
class BodySite:
    """A body site the clinic treats or measures."""

    key: str
    display: str
    snomed: Code | None
    lateral: bool  # takes left / right / bilateral
    definition: str = ""


@dataclass(frozen=True)
class Laterality:
    """left, right or bilateral."""

    key: str
    display: str
    snomed: Code | None
    definition: str = ""


@dataclass(frozen=True)
class Unit:
    """A UCUM unit."""

    code: str
    display: str
    system: str = "http://unitsofmeasure.org"
    source: str = ""


@dataclass(frozen=True)
class Measure:
    """Something measured before or after treatment, with its allowed range and FHIR profile."""

    key: str
    display: str
    loinc: Code | None  # None = no verified LOINC code; the clinic code and text are sent
    unit: Unit
    minimum: Decimal
    maximum: Decimal
    integer: bool
    profile: str  # US Core profile canonical for the Observation
    categories: tuple[Code, ...]  # Observation.category codings
    lateral: bool  # measured per side (a paired joint or a direction of movement)
    higher_is_better: bool  # for outcome summaries: does a rise mean improvement?
    definition: str = ""


@dataclass(frozen=True)
class ClinicCodeSystems:
    """Canonical URLs of the clinic vocabulary code systems (and of our extensions)."""

    canonical_base: str
    technique: str
    body_site: str
    laterality: str
    measure: str
    version: str = ""  # business version of the published CodeSystems / ConceptMaps


@dataclass(frozen=True)
class MappingTables:
    """Everything ``mappings/`` says, validated, keyed by the clinic's vocabulary key."""

    systems: ClinicCodeSystems
    techniques: dict[str, Technique]
    body_sites: dict[str, BodySite]
    lateralities: dict[str, Laterality]
    measures: dict[str, Measure]
    #: the services a prescription (inbound ServiceRequest.code) may order
    referral_services: tuple[Code, ...] = ()
    #: minimal clinically important difference per measure key (``mcid.yaml``)
    mcids: dict[str, Mcid] = field(default_factory=dict)


class MappingError(ValueError):
    """A mapping file is missing or breaks a rule; the message names the file and the entry."""


@dataclass(frozen=True)
class _Where:
    """Where in which file we are, for error messages: ``folder/file.yaml: entry: field``."""

    label: str
    path: tuple[str, ...] = ()

    def at(self, *keys: object) -> _Where:
        return _Where(self.label, self.path + tuple(str(k) for k in keys))

    def fail(self, message: str) -> MappingError:
        return MappingError(": ".join((self.label, *self.path, message)))


# --- public entry point -------------------------------------------------------------------


def load_tables(folder: Path | None = None) -> MappingTables:
    """Load and validate the mapping files of ``folder`` (default: the shipped ``mappings/``)."""
    from fhir_bridge.mapping.mcid import load_mcids  # it builds on this module's primitives

    folder = Path(folder) if folder is not None else DEFAULT_MAPPINGS_DIR
    measures = _load_measures(folder)
    return MappingTables(
        systems=_load_systems(folder),
        techniques=_load_vocabulary(folder, "techniques", _technique),
        body_sites=_load_vocabulary(folder, "body_sites", _body_site),
        lateralities=_load_vocabulary(folder, "lateralities", _laterality),
        measures=measures,
        referral_services=_load_referral_services(folder),
        mcids=load_mcids(folder, measures),
    )


# --- files --------------------------------------------------------------------------------


def _read_yaml(folder: Path, name: str, section: str | None) -> tuple[dict[str, Any], _Where]:
    """Parse one file; duplicate keys anywhere are an error (YAML would keep the last one)."""
    where = _Where(f"{folder.name}/{name}.yaml")
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise where.fail(f"file not found in {folder}")
    loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_duplicates(node, where, section)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise where.fail(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise where.fail("expected a mapping at the top level")
    return data, where


def _refuse_duplicates(node: yaml.Node, where: _Where, section: str | None) -> None:
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicates(item, where.at(index), None)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in seen:
            raise where.at(key).fail(f"duplicate key (line {key_node.start_mark.line + 1})")
        seen.add(key)
        # entries of the file's main section are named without the section, as elsewhere
        inner = where if key == section else where.at(key)
        _refuse_duplicates(value_node, inner, None)


def _load_systems(folder: Path) -> ClinicCodeSystems:
    data, where = _read_yaml(folder, "systems", None)
    fields = _fields(data, where, required={"canonical_base", "code_systems"}, optional={"version"})
    base = _url(fields["canonical_base"], where.at("canonical_base"))
    if base.endswith("/"):
        raise where.at("canonical_base").fail("must not end with '/'")
    urls = _fields(
        fields["code_systems"],
        where.at("code_systems"),
        required={"technique", "body_site", "laterality", "measure"},
    )
    checked = {k: _code_system_url(v, base, where.at("code_systems", k)) for k, v in urls.items()}
    if len(set(checked.values())) != len(checked):
        raise where.at("code_systems").fail("the four code system URLs must differ")
    version = fields.get("version")
    return ClinicCodeSystems(
        canonical_base=base,
        version="" if version is None else _text(str(version), where.at("version")),
        **checked,
    )


def _code_system_url(value: Any, base: str, where: _Where) -> str:
    url = _url(value, where)
    prefix = f"{base}/CodeSystem/"
    if not url.startswith(prefix) or not FHIR_ID_RE.fullmatch(url.removeprefix(prefix)):
        raise where.fail(f"{url} is not {prefix}<id> (id: letters, digits, '-', '.')")
    return url


def _load_vocabulary(
    folder: Path, section: str, build: Callable[[str, Mapping[str, Any], _Where], Any]
) -> dict[str, Any]:
    data, where = _read_yaml(folder, section, section)
    _fields(data, where, required={section})
    return _entries(data[section], where, build)


def _entries(
    raw: Any, where: _Where, build: Callable[[str, Mapping[str, Any], _Where], Any]
) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise where.fail("expected a non-empty mapping of vocabulary keys")
    tables: dict[str, Any] = {}
    for key, entry in raw.items():
        here = where.at(key)
        if not isinstance(key, str) or not KEY_RE.fullmatch(key):
            raise here.fail("vocabulary key must match ^[a-z][a-z0-9_]*$")
        if not isinstance(entry, dict):
            raise here.fail("expected a mapping of fields")
        tables[key] = build(key, entry, here)
    return tables


# --- entries ------------------------------------------------------------------------------


def _technique(key: str, raw: Mapping[str, Any], where: _Where) -> Technique:
    f = _fields(
        raw, where, required={"display", "timed", "billing", "snomed"}, optional={"definition"}
    )
    billing = _optional_code(f["billing"], where.at("billing"), {CPT})
    timed = _bool(f["timed"], where.at("timed"))
    if timed and billing is None:
        raise where.at("timed").fail("a timed technique needs a billing code")
    return Technique(
        key=key,
        display=_text(f["display"], where.at("display")),
        billing=billing,
        snomed=_optional_code(f["snomed"], where.at("snomed"), {SNOMED}),
        timed=timed,
        definition=_definition(f, where),
    )


def _body_site(key: str, raw: Mapping[str, Any], where: _Where) -> BodySite:
    f = _fields(raw, where, required={"display", "lateral", "snomed"}, optional={"definition"})
    return BodySite(
        key=key,
        display=_text(f["display"], where.at("display")),
        snomed=_optional_code(f["snomed"], where.at("snomed"), {SNOMED}),
        lateral=_bool(f["lateral"], where.at("lateral")),
        definition=_definition(f, where),
    )


def _laterality(key: str, raw: Mapping[str, Any], where: _Where) -> Laterality:
    f = _fields(raw, where, required={"display", "snomed"}, optional={"definition"})
    return Laterality(
        key=key,
        display=_text(f["display"], where.at("display")),
        snomed=_optional_code(f["snomed"], where.at("snomed"), {SNOMED}),
        definition=_definition(f, where),
    )


_MEASURE_FIELDS = {
    "display",
    "loinc",
    "unit",
    "minimum",
    "maximum",
    "integer",
    "profile",
    "categories",
    "lateral",
    "higher_is_better",
}


def _load_measures(folder: Path) -> dict[str, Measure]:
    data, where = _read_yaml(folder, "measures", "measures")
    _fields(data, where, required={"units", "categories", "measures"})
    units = _named(data["units"], where.at("units"), _unit)
    categories = _named(data["categories"], where.at("categories"), _category)

    def build(key: str, raw: Mapping[str, Any], here: _Where) -> Measure:
        return _measure(key, raw, here, units, categories)

    return _entries(data["measures"], where, build)


def _measure(
    key: str,
    raw: Mapping[str, Any],
    where: _Where,
    units: Mapping[str, Unit],
    categories: Mapping[str, Code],
) -> Measure:
    f = _fields(raw, where, required=_MEASURE_FIELDS, optional={"definition"})
    minimum = _number(f["minimum"], where.at("minimum"))
    maximum = _number(f["maximum"], where.at("maximum"))
    if minimum > maximum:
        raise where.fail(f"minimum {minimum} is above maximum {maximum}")
    integer = _bool(f["integer"], where.at("integer"))
    if integer and (minimum != minimum.to_integral() or maximum != maximum.to_integral()):
        raise where.fail("an integer measure needs whole-number minimum and maximum")
    return Measure(
        key=key,
        display=_text(f["display"], where.at("display")),
        loinc=_optional_code(f["loinc"], where.at("loinc"), {LOINC}),
        unit=_pick(units, f["unit"], where.at("unit"), "unit"),
        minimum=minimum,
        maximum=maximum,
        integer=integer,
        profile=_profile(f["profile"], where.at("profile")),
        categories=_categories(f["categories"], where.at("categories"), categories),
        lateral=_bool(f["lateral"], where.at("lateral")),
        higher_is_better=_bool(f["higher_is_better"], where.at("higher_is_better")),
        definition=_definition(f, where),
    )


def _load_referral_services(folder: Path) -> tuple[Code, ...]:
    """The value set of ``referral_services.yaml``: CPT codes, each listed once."""
    data, where = _read_yaml(folder, "referral_services", "referral_services")
    _fields(data, where, required={"referral_services"})

    def build(_key: str, raw: Mapping[str, Any], here: _Where) -> Code:
        return _code(raw, here, {CPT}, mapping=False)

    services = _entries(data["referral_services"], where, build)
    seen: dict[tuple[str, str], str] = {}
    for key, code in services.items():
        other = seen.setdefault((code.system, code.code), key)
        if other != key:
            raise where.at(key, "code").fail(f"{code.code} is already listed as {other}")
    return tuple(services.values())


def _named(
    raw: Any, where: _Where, build: Callable[[str, Mapping[str, Any], _Where], Any]
) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise where.fail("expected a non-empty mapping")
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise where.at(name).fail("expected a mapping of fields")
        out[str(name)] = build(str(name), entry, where.at(name))
    return out


def _unit(code: str, raw: Mapping[str, Any], where: _Where) -> Unit:
    f = _fields(raw, where, required={"display", "source"})
    return Unit(
        code=code,
        display=_text(f["display"], where.at("display")),
        system=UCUM,
        source=_url(f["source"], where.at("source")),
    )


def _category(_name: str, raw: Mapping[str, Any], where: _Where) -> Code:
    return _code(raw, where, CATEGORY_SYSTEMS, mapping=False)


def _categories(raw: Any, where: _Where, categories: Mapping[str, Code]) -> tuple[Code, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.fail("expected a non-empty list of category names")
    if len(set(map(str, raw))) != len(raw):
        raise where.fail("a category is listed twice")
    return tuple(_pick(categories, name, where, "category") for name in raw)


def _pick(known: Mapping[str, Any], name: Any, where: _Where, what: str) -> Any:
    if not isinstance(name, str) or name not in known:
        raise where.fail(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def _profile(value: Any, where: _Where) -> str:
    profile = _text(value, where)
    if not US_CORE_PROFILE_RE.fullmatch(profile):
        raise where.fail(f"{profile} is not a US Core StructureDefinition canonical")
    return profile


# --- codes --------------------------------------------------------------------------------


def _optional_code(raw: Any, where: _Where, systems: set[str]) -> Code | None:
    return None if raw is None else _code(raw, where, systems, mapping=True)


def _code(raw: Any, where: _Where, systems: set[str] | frozenset[str], *, mapping: bool) -> Code:
    """A standard code; ``mapping`` codes also say how they relate to the clinic concept."""
    required = {"system", "code", "display", "source"} | ({"equivalence"} if mapping else set())
    f = _fields(raw, where, required=required, optional={"note"} if mapping else set())
    system = _text(f["system"], where.at("system"))
    if system not in KNOWN_SYSTEMS:
        raise where.at("system").fail(f"unknown code system {system}")
    if system not in systems:
        raise where.at("system").fail(f"expected {' or '.join(sorted(systems))}, got {system}")
    if not isinstance(f["code"], str):
        raise where.at("code").fail(f"code {f['code']!r} must be text: quote it")
    code = _text(f["code"], where.at("code"))
    _check_code_format(system, code, where.at("code"))
    equivalence = f.get("equivalence", "equivalent")
    note = _text(f["note"], where.at("note")) if "note" in f else ""
    if not isinstance(equivalence, str) or equivalence not in EQUIVALENCES:
        raise where.at("equivalence").fail(
            f"{equivalence!r} is not one of {', '.join(sorted(EQUIVALENCES))}"
        )
    if equivalence in EQUIVALENCES_NEEDING_NOTE and not note:
        raise where.at("note").fail(f"equivalence {equivalence} needs a note")
    return Code(
        system=system,
        code=code,
        display=_text(f["display"], where.at("display")),
        source=_url(f["source"], where.at("source")),
        equivalence=equivalence,
        note=note,
    )


def _check_code_format(system: str, code: str, where: _Where) -> None:
    """Catch typos: CPT shape, the LOINC mod-10 and the SNOMED CT Verhoeff check digits."""
    if system == CPT and not is_cpt_code(code):
        raise where.fail(f"{code} is not a CPT code (5 characters)")
    if system == LOINC and not is_loinc_code(code):
        raise where.fail(f"{code} is not a LOINC code (bad format or check digit)")
    if system == SNOMED and not is_snomed_concept_id(code):
        raise where.fail(f"{code} is not a SNOMED CT concept id (bad format or check digit)")


# --- primitives ---------------------------------------------------------------------------


def _fields(
    raw: Any, where: _Where, *, required: set[str], optional: set[str] | None = None
) -> dict[str, Any]:
    """The entry's fields; unknown and missing ones are errors."""
    if not isinstance(raw, dict):
        raise where.fail("expected a mapping of fields")
    unknown = sorted(str(k) for k in raw if k not in required | (optional or set()))
    if unknown:
        raise where.fail(f"unknown field(s) {', '.join(unknown)}")
    missing = sorted(required - raw.keys())
    if missing:
        raise where.fail(f"missing required field(s) {', '.join(missing)}")
    return dict(raw)


def _text(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.fail("expected non-empty text")
    return value.strip()


def _definition(fields: Mapping[str, Any], where: _Where) -> str:
    return _text(fields["definition"], where.at("definition")) if "definition" in fields else ""


def _bool(value: Any, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.fail(f"expected true or false, got {value!r}")
    return value


def _number(value: Any, where: _Where) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.fail(f"expected a number, got {value!r}")
    return Decimal(str(value))


def _url(value: Any, where: _Where) -> str:
    url = _text(value, where)
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise where.fail(f"{url!r} is not an http(s) URL")
    return url
