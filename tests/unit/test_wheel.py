"""The wheel is what gets installed (the Dockerfile builds one): it must carry the code
mappings and the license, and the bridge must find its mappings when imported from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = sorted(p.name for p in (ROOT / "mappings").glob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("fhir_bridge-*.whl")
    return built


def test_the_wheel_carries_the_mappings_and_the_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("fhir_bridge/_mappings/"))
    assert shipped == sorted([*MAPPINGS, "README.md"])
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names)


def test_imported_from_the_wheel_the_bridge_loads_its_shipped_mappings(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "from fhir_bridge.mapping.tables import DEFAULT_MAPPINGS_DIR, load_tables\n"
        "tables = load_tables()\n"
        "print(DEFAULT_MAPPINGS_DIR)\n"
        "print(len(tables.techniques))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    folder, count = done.stdout.split()
    assert Path(folder) == site / "fhir_bridge" / "_mappings"
    assert int(count) > 0
