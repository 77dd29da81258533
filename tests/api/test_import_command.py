"""``fhir-bridge import FILE.jsonl``: a backlog of session records, line by line.

Good lines are created (or replaced on replay), blank lines skipped, and every rejected line is
written as it was, with its errors, to the rejected file; the terminal shows no PHI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fhir_bridge.cli import main

SESSIONS = Path(__file__).resolve().parents[2] / "sample_bundles" / "sessions"
PHI = ("Rivera", "Castellanos", "Lindqvist", "Ferreira", "1979-03-14", "XQZ123456789", "P-1001")


def sample(name: str) -> dict[str, Any]:
    return json.loads((SESSIONS / f"{name}.json").read_text())


def line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


@pytest.fixture
def env(runtime, database_url: str) -> dict[str, str]:
    """The CLI's environment, on the empty migrated database of ``runtime``."""
    return {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["import", *args], env=env, catch_exceptions=False)


def test_a_mixed_backlog_is_imported_and_its_rejects_kept(env, client, tmp_path) -> None:
    whiplash = line(sample("whiplash-neck-pain"))
    lymphedema = line(sample("postmastectomy-lymphedema"))
    back = sample("chronic-low-back-pain")
    back["notes"]["plan"] += "\u2028Review in 3 weeks."  # a raw U+2028 must not split the line
    bad_json = '{"session_id": "MMC-2026-000299", "status": "completed", "patient": '
    unknown = sample("tension-headache")
    unknown["treatments"][0]["technique"] = "hot_stone_massage"
    invalid = line(unknown)
    lines = [whiplash, lymphedema, "", bad_json, invalid, line(back), whiplash]
    backlog = tmp_path / "backlog.jsonl"
    backlog.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = run(env, str(backlog))

    assert result.exit_code == 1
    assert "6 lines: 4 accepted (3 created, 1 replaced), 2 rejected" in result.stdout
    assert "line 4: $: invalid JSON" in result.output
    assert "line 5: treatments[0].technique:" in result.output
    assert not any(phi in result.output for phi in PHI), "PHI on the terminal"

    rejected = [
        json.loads(x) for x in (tmp_path / "backlog.rejected.jsonl").read_text("utf-8").splitlines()
    ]
    assert [r["line"] for r in rejected] == [4, 5]
    assert rejected[0]["record"] == bad_json
    assert rejected[0]["errors"][0]["path"] == "$"
    assert rejected[0]["errors"][0]["message"].startswith("invalid JSON")
    assert rejected[1]["record"] == invalid
    assert json.loads(rejected[1]["record"]) == unknown, "the line is kept as it was"
    assert [e["path"] for e in rejected[1]["errors"]] == ["treatments[0].technique"]
    assert "hot_stone_massage" in rejected[1]["errors"][0]["message"]

    for session_id, billing in (
        ("MMC-2026-000201", [("97140", 45, 3)]),
        ("MMC-2026-000202", [("97140", 45, 3)]),
        ("MMC-2026-000203", [("97124", 40, 3)]),
    ):
        response = client.get(f"/api/v1/sessions/{session_id}")
        assert response.status_code == 200, session_id
        view = response.get_json()
        assert view["status"] == "completed"
        assert [(b["code"], b["minutes"], b["units"]) for b in view["billing"]] == billing
    assert client.get("/api/v1/sessions/MMC-2026-000204").status_code == 404
    back_view = client.get("/api/v1/sessions/MMC-2026-000203").get_json()
    assert back_view["record"]["notes"]["plan"].endswith("\u2028Review in 3 weeks.")
    assert "not-billable" in [f["code"] for f in back_view["flags"]]


def test_a_clean_backlog_exits_0_and_rejects_nothing(env, client, tmp_path) -> None:
    backlog = tmp_path / "clean.jsonl"
    records = [sample("tension-headache"), sample("whiplash-neck-pain")]
    backlog.write_bytes(b"".join(line(r).encode() + b"\r\n" for r in records))
    rejected = tmp_path / "out" / "rejects.jsonl"
    rejected.parent.mkdir()

    result = run(env, str(backlog), "--rejected", str(rejected))

    assert result.exit_code == 0, result.output
    assert "2 lines: 2 accepted (2 created, 0 replaced), 0 rejected" in result.stdout
    assert rejected.read_text() == ""
    assert client.get("/api/v1/sessions/MMC-2026-000204").status_code == 200


def test_a_line_that_is_not_utf8_is_rejected_and_kept_byte_for_byte(env, tmp_path) -> None:
    raw = b'{"session_id": "MMC-2026-000298", "notes": "caf\xe9"}'
    backlog = tmp_path / "latin1.jsonl"
    backlog.write_bytes(raw + b"\n")

    result = run(env, str(backlog))

    assert result.exit_code == 1
    assert "1 lines: 0 accepted (0 created, 0 replaced), 1 rejected" in result.stdout
    (entry,) = [
        json.loads(x) for x in (tmp_path / "latin1.rejected.jsonl").read_text().splitlines()
    ]
    assert entry["record"].encode("utf-8", "surrogateescape") == raw


def test_the_rejected_file_may_not_be_the_backlog(env, tmp_path) -> None:
    backlog = tmp_path / "b.jsonl"
    backlog.write_text("")
    result = CliRunner().invoke(main, ["import", str(backlog), "--rejected", str(backlog)], env=env)
    assert result.exit_code == 2
    assert backlog.exists()
