"""The mapping loader: the shipped files load and cover the contract; broken files are refused."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from fhir_bridge.mapping.tables import (
    DEFAULT_MAPPINGS_DIR,
    KNOWN_SYSTEMS,
    MappingError,
    MappingTables,
    load_tables,
)

# The vocabulary keys of the session contract (contracts/session.md): never fewer, never renamed.
CONTRACT_TECHNIQUES = {
    "swedish_massage",
    "deep_tissue_massage",
    "manual_lymphatic_drainage",
    "muscle_energy_technique",
    "cupping",
    "trigger_point_therapy",
    "myofascial_release",
}
CONTRACT_BODY_SITES = {
    "head", "jaw", "neck", "cervical_spine", "upper_trapezius", "shoulder", "upper_back",
    "thoracic_spine", "lower_back", "lumbar_spine", "hip", "gluteal", "thigh", "knee", "calf",
    "foot", "upper_arm", "forearm", "hand", "chest", "abdomen",
}  # fmt: skip
CONTRACT_LATERALITIES = {"left", "right", "bilateral"}
CONTRACT_MEASURE_RANGES = {
    "pain_nrs": (0, 10),
    "cervical_rotation_rom": (0, 180),
    "cervical_flexion_rom": (0, 180),
    "cervical_extension_rom": (0, 180),
    "cervical_lateral_flexion_rom": (0, 180),
    "shoulder_flexion_rom": (0, 180),
    "shoulder_abduction_rom": (0, 180),
    "shoulder_external_rotation_rom": (0, 180),
    "hip_flexion_rom": (0, 180),
    "lumbar_flexion_rom": (0, 180),
    "oswestry_disability_index": (0, 100),
    "promis_physical_function_t": (10, 90),
    "promis_sleep_disturbance_t": (10, 90),
    "sleep_quality_nrs": (0, 10),
    "adl_dressing_difficulty": (0, 4),
    "adl_household_difficulty": (0, 4),
}
SCREENING = (
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-screening-assessment"
)
CLINICAL_RESULT = (
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-clinical-result"
)


@pytest.fixture(scope="module")
def tables() -> MappingTables:
    return load_tables()


# --- the shipped files ------------------------------------------------------------------------


def test_default_folder_is_the_repository_mappings() -> None:
    assert DEFAULT_MAPPINGS_DIR.name == "mappings"
    assert (DEFAULT_MAPPINGS_DIR / "measures.yaml").is_file()


def test_every_contract_key_is_present(tables: MappingTables) -> None:
    assert not CONTRACT_TECHNIQUES - tables.techniques.keys()
    assert not CONTRACT_BODY_SITES - tables.body_sites.keys()
    assert not CONTRACT_LATERALITIES - tables.lateralities.keys()
    assert not CONTRACT_MEASURE_RANGES.keys() - tables.measures.keys()


def test_entries_carry_their_key(tables: MappingTables) -> None:
    for table in (tables.techniques, tables.body_sites, tables.lateralities, tables.measures):
        assert all(entry.key == key for key, entry in table.items())


@pytest.mark.parametrize(("key", "bounds"), CONTRACT_MEASURE_RANGES.items())
def test_measure_ranges_follow_the_contract(
    tables: MappingTables, key: str, bounds: tuple[int, int]
) -> None:
    measure = tables.measures[key]
    assert (measure.minimum, measure.maximum) == (Decimal(bounds[0]), Decimal(bounds[1]))


def test_measure_profiles_units_and_categories(tables: MappingTables) -> None:
    for key, measure in tables.measures.items():
        categories = {c.code for c in measure.categories}
        if key.endswith("_rom"):
            assert measure.profile == CLINICAL_RESULT
            assert categories == {"exam"}
            assert measure.unit.code == "deg"
            assert measure.higher_is_better
        else:
            assert measure.profile == SCREENING
            assert "survey" in categories
            assert measure.unit.code == "{score}"
    functional = {"oswestry_disability_index", "promis_physical_function_t"}
    functional |= {"adl_dressing_difficulty", "adl_household_difficulty"}
    for key in functional:
        assert "functional-status" in {c.code for c in tables.measures[key].categories}
    pain = tables.measures["pain_nrs"]
    assert pain.integer
    assert not pain.higher_is_better
    assert tables.measures["sleep_quality_nrs"].higher_is_better
    assert tables.measures["promis_physical_function_t"].higher_is_better
    assert not tables.measures["promis_sleep_disturbance_t"].higher_is_better


def test_billing_codes_follow_domain_reference(tables: MappingTables) -> None:
    billing = {k: t.billing.code if t.billing else None for k, t in tables.techniques.items()}
    assert billing["swedish_massage"] == billing["deep_tissue_massage"] == "97124"
    for key in ("manual_lymphatic_drainage", "myofascial_release", "trigger_point_therapy"):
        assert billing[key] == "97140"
    met = tables.techniques["muscle_energy_technique"].billing
    assert met is not None
    assert met.code == "97140"
    assert "97112" in met.note  # the payer variation is recorded, not hidden
    assert billing["cupping"] is None
    assert not tables.techniques["cupping"].timed
    cupping = tables.techniques["cupping"].snomed
    assert cupping is not None
    assert cupping.code == "231097002"


def test_verified_codes_only(tables: MappingTables) -> None:
    """Exactly the codes with a cited source are mapped; the rest stay empty on purpose."""
    techniques_with_snomed = {k for k, t in tables.techniques.items() if t.snomed}
    assert techniques_with_snomed == {"cupping"}
    loinc = {k: m.loinc.code for k, m in tables.measures.items() if m.loinc}
    assert loinc == {
        "pain_nrs": "72514-3",
        "shoulder_external_rotation_rom": "41387-2",
        "oswestry_disability_index": "97909-6",
        "promis_physical_function_t": "77874-6",
        "promis_sleep_disturbance_t": "77860-5",
    }
    sides = {k: x.snomed.code for k, x in tables.lateralities.items() if x.snomed}
    assert sides == {"left": "419161000", "right": "419465000", "bilateral": "51440002"}
    for key in ("jaw", "cervical_spine", "upper_trapezius", "gluteal", "abdomen"):
        assert tables.body_sites[key].snomed is None


def test_every_standard_code_has_a_source(tables: MappingTables) -> None:
    codes = [t.billing for t in tables.techniques.values()]
    codes += [t.snomed for t in tables.techniques.values()]
    codes += [b.snomed for b in tables.body_sites.values()]
    codes += [x.snomed for x in tables.lateralities.values()]
    codes += [m.loinc for m in tables.measures.values()]
    codes += [c for m in tables.measures.values() for c in m.categories]
    for code in filter(None, codes):
        assert code.source.startswith(("http://", "https://")), code
        assert code.system in KNOWN_SYSTEMS, code
    assert all(m.unit.source for m in tables.measures.values())


def test_referral_services_follow_domain_reference(tables: MappingTables) -> None:
    """The prescription value set: verified CPT codes only (domain reference 5.2)."""
    codes = [(c.system, c.code) for c in tables.referral_services]
    cpt = "http://www.ama-assn.org/go/cpt"
    assert codes == [(cpt, "97124"), (cpt, "97140"), (cpt, "97110")]
    assert all(c.source.startswith(("http://", "https://")) for c in tables.referral_services)


def test_systems(tables: MappingTables) -> None:
    s = tables.systems
    assert s.canonical_base == "http://fhir-bridge.org/fhir"
    for url in (s.technique, s.body_site, s.laterality, s.measure):
        assert url.startswith("http://fhir-bridge.org/fhir/CodeSystem/")


# --- broken files ---------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the shipped mappings."""
    target = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, target)
    return target


def _edit(folder: Path, name: str, old: str, new: str, count: int = 1) -> None:
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def _fails(folder: Path, *fragments: str) -> str:
    with pytest.raises(MappingError) as caught:
        load_tables(folder)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_copy_loads(folder: Path) -> None:
    assert load_tables(folder).measures.keys() == load_tables().measures.keys()


def test_minimum_above_maximum(folder: Path) -> None:
    _edit(folder, "measures.yaml", "    maximum: 10\n", "    maximum: -1\n")
    message = _fails(folder)
    assert message == "mappings/measures.yaml: pain_nrs: minimum 0 is above maximum -1"


def test_unknown_field(folder: Path) -> None:
    _edit(
        folder,
        "techniques.yaml",
        "    display: Cupping\n",
        "    display: Cupping\n    colour: red\n",
    )
    _fails(folder, "mappings/techniques.yaml: cupping: ", "unknown field(s) colour")


def test_missing_required_field(folder: Path) -> None:
    _edit(folder, "body_sites.yaml", "    display: Knee\n", "")
    _fails(folder, "mappings/body_sites.yaml: knee: ", "missing required field(s) display")


def test_code_without_source(folder: Path) -> None:
    _edit(folder, "measures.yaml", "      source: https://loinc.org/72514-3/\n", "")
    _fails(folder, "mappings/measures.yaml: pain_nrs: loinc: ", "missing required field(s) source")


def test_source_must_be_a_url(folder: Path) -> None:
    _edit(
        folder,
        "techniques.yaml",
        "source: http://www.chiroeco.com/a-comparison-of-codes/",
        "source: domain.md",
    )
    _fails(
        folder, "techniques.yaml: trigger_point_therapy: billing: source: ", "not an http(s) URL"
    )


def test_duplicate_entry_key(folder: Path) -> None:
    path = folder / "lateralities.yaml"
    path.write_text(path.read_text() + "  left:\n    display: Left again\n    snomed: null\n")
    _fails(folder, "mappings/lateralities.yaml: left: duplicate key (line")


def test_duplicate_field_names_the_entry(folder: Path) -> None:
    _edit(
        folder, "body_sites.yaml", "    display: Knee\n", "    display: Knee\n    display: Knees\n"
    )
    _fails(folder, "mappings/body_sites.yaml: knee: display: duplicate key")


def test_unknown_system(folder: Path) -> None:
    _edit(
        folder,
        "techniques.yaml",
        "system: http://snomed.info/sct",
        "system: http://example.org/sct",
    )
    _fails(folder, "mappings/techniques.yaml: cupping: snomed: system: ", "unknown code system")


def test_system_must_fit_the_field(folder: Path) -> None:
    _edit(folder, "measures.yaml", "system: http://loinc.org", "system: http://snomed.info/sct")
    _fails(folder, "mappings/measures.yaml: pain_nrs: loinc: system: ", "expected http://loinc.org")


def test_profile_must_be_us_core(folder: Path) -> None:
    _edit(
        folder,
        "measures.yaml",
        "profile: http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-clinical-result",
        "profile: http://hl7.org/fhir/StructureDefinition/Observation",
    )
    _fails(folder, "measures.yaml: cervical_rotation_rom: profile: ", "not a US Core")


def test_vocabulary_key_pattern(folder: Path) -> None:
    _edit(folder, "body_sites.yaml", "  upper_arm:\n", "  Upper-Arm:\n")
    _fails(folder, "mappings/body_sites.yaml: Upper-Arm: ", "^[a-z][a-z0-9_]*$")


def test_code_must_be_quoted_text(folder: Path) -> None:
    _edit(folder, "techniques.yaml", 'code: "97124"', "code: 97124")
    _fails(folder, "techniques.yaml: swedish_massage: billing: code: ", "quote it")


@pytest.mark.parametrize(
    ("file", "old", "new", "where"),
    [
        ("measures.yaml", '"72514-3"', '"72514-4"', "pain_nrs: loinc: code"),
        ("techniques.yaml", '"231097002"', '"231097003"', "cupping: snomed: code"),
        ("techniques.yaml", '"97140"', '"9714"', "manual_lymphatic_drainage: billing: code"),
    ],
)
def test_check_digits_catch_typos(folder: Path, file: str, old: str, new: str, where: str) -> None:
    _edit(folder, file, old, new)
    _fails(folder, f"mappings/{file}: {where}: ")


def test_timed_needs_a_billing_code(folder: Path) -> None:
    _edit(folder, "techniques.yaml", "    timed: false  # no billing code\n", "    timed: true\n")
    _fails(folder, "mappings/techniques.yaml: cupping: timed: ", "needs a billing code")


def test_bad_equivalence(folder: Path) -> None:
    _edit(folder, "techniques.yaml", "equivalence: relatedto", "equivalence: similar")
    _fails(folder, "techniques.yaml: muscle_energy_technique: billing: equivalence: ")


def test_unknown_unit_and_category(folder: Path) -> None:
    _edit(folder, "measures.yaml", "    categories: [survey]\n", "    categories: [surveys]\n")
    _fails(folder, "mappings/measures.yaml: pain_nrs: categories: ", "unknown category 'surveys'")


def test_code_system_url_under_canonical_base(folder: Path) -> None:
    _edit(
        folder,
        "systems.yaml",
        "measure: http://fhir-bridge.org/fhir/CodeSystem/",
        "measure: http://other.org/CodeSystem/",
    )
    _fails(folder, "mappings/systems.yaml: code_systems: measure: ")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'code: "97110"',
            'code: "97140"',
            "mappings/referral_services.yaml: therapeutic_exercise: code: "
            "97140 is already listed as manual_therapy",
        ),
        (
            '    system: http://www.ama-assn.org/go/cpt\n    code: "97140"',
            '    system: http://snomed.info/sct\n    code: "97140"',
            "mappings/referral_services.yaml: manual_therapy: system: "
            "expected http://www.ama-assn.org/go/cpt, got http://snomed.info/sct",
        ),
        (
            'code: "97124"',
            "code: 97124",
            "mappings/referral_services.yaml: massage_therapy: code: code 97124 must be text: "
            "quote it",
        ),
    ],
)
def test_broken_referral_services(folder: Path, old: str, new: str, message: str) -> None:
    _edit(folder, "referral_services.yaml", old, new)
    assert _fails(folder) == message


def test_missing_file(folder: Path) -> None:
    (folder / "lateralities.yaml").unlink()
    _fails(folder, "mappings/lateralities.yaml: file not found")


def test_invalid_yaml(folder: Path) -> None:
    (folder / "body_sites.yaml").write_text("body_sites: [unclosed\n")
    _fails(folder, "mappings/body_sites.yaml: invalid YAML")


# --- MCID (mcid.yaml) -----------------------------------------------------------------------


def test_every_measure_has_an_mcid_entry_with_a_source_or_a_reason() -> None:
    tables = load_tables()
    assert tables.mcids.keys() == tables.measures.keys()
    for mcid in tables.mcids.values():
        assert (mcid.value is not None and mcid.source.startswith("https://")) or (
            mcid.value is None and mcid.reason
        ), mcid
    assert tables.mcids["pain_nrs"].value == 2


def test_mcid_value_without_a_source(folder: Path) -> None:
    _edit(folder, "mcid.yaml", "    source: https://pmc.ncbi.nlm.nih.gov/articles/PMC7053735\n", "")
    _fails(folder, "mappings/mcid.yaml: pain_nrs: source: ", "expected non-empty text")


def test_mcid_missing_for_a_measure(folder: Path) -> None:
    _edit(folder, "mcid.yaml", "  sleep_quality_nrs:\n", "  sleep_quality_nrs_old:\n")
    _fails(folder, "mappings/mcid.yaml: sleep_quality_nrs_old: ", "not a measure")


def test_mcid_null_needs_a_reason(folder: Path) -> None:
    _edit(folder, "mcid.yaml", "    reason: *adl_reason\n", "", count=2)
    _fails(folder, "mappings/mcid.yaml: adl_household_difficulty: reason: ", "non-empty text")
