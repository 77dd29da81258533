"""The fhir-bridge command: migrations, loading sample data idempotently, refusing bad bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_bridge.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"


@pytest.fixture
def env(tmp_path):
    return {
        "FHIR_BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "FHIR_BRIDGE_LOG_JSON": "false",
    }


def run(env, *args):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result


def test_upgrade_then_load_samples_then_reload_changes_nothing(env):
    from fhir_bridge.store.migrate import head_revision

    assert f"database at revision {head_revision()}" in run(env, "db", "upgrade").output
    total = sum(len(json.loads(p.read_text())["entry"]) for p in SAMPLES.glob("*.json"))
    first = run(env, "load", str(SAMPLES))
    assert first.exit_code == 0
    assert f"{total} created, 0 updated, 0 unchanged" in first.output
    again = run(env, "load", str(SAMPLES))
    assert f"0 created, 0 updated, {total} unchanged" in again.output
    assert "nothing loaded" in run(env, "load", str(SAMPLES), "--if-empty").output


def test_loaded_samples_are_served(env):
    from fhir_bridge.app import create_app
    from fhir_bridge.settings import Settings

    run(env, "db", "upgrade")
    run(env, "load", str(SAMPLES))
    app = create_app(Settings(database_url=env["FHIR_BRIDGE_DATABASE_URL"], testing=True))
    body = app.test_client().get("/fhir/Patient?name=rivera").get_json()
    assert [e["resource"]["id"] for e in body["entry"]] == ["pat-rivera-ana"]


def test_an_invalid_bundle_is_refused_with_its_file_and_path(env, tmp_path):
    run(env, "db", "upgrade")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": {"resourceType": "Patient", "id": "p1", "gender": "robot"}}],
            }
        )
    )
    result = CliRunner().invoke(main, ["load", str(bad)], env=env)
    assert result.exit_code == 1
    assert "bad.json" in result.output
    assert "gender" in result.output


def test_malformed_setting_is_named(env):
    env = {**env, "FHIR_BRIDGE_MAX_BODY_BYTES": "lots"}
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 1
    assert "FHIR_BRIDGE_MAX_BODY_BYTES" in result.output


def test_mappings_check_passes_on_the_shipped_tables(env):
    result = run(env, "mappings", "check")
    assert result.exit_code == 0
    assert "mappings ok: 7 techniques" in result.output


def test_mappings_check_names_file_and_entry_of_a_broken_table(env, tmp_path):
    import shutil

    broken = tmp_path / "mappings"
    shutil.copytree(Path(__file__).resolve().parents[2] / "mappings", broken)
    measures = broken / "measures.yaml"
    measures.write_text(measures.read_text().replace("maximum: 10", "maximum: -1", 1))
    result = CliRunner().invoke(main, ["mappings", "check", str(broken)], env=env)
    assert result.exit_code == 1
    assert "measures.yaml" in result.output
    assert "pain_nrs" in result.output
