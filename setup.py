"""Build hook: ship the code mappings (``mappings/``, the repository's data) in the wheel.

Everything else about the package is in pyproject.toml. ``mappings/`` stays at the repository
root, where clinics edit it; the wheel carries a copy as ``fhir_bridge/_mappings`` and the
loader (``fhir_bridge.mapping.tables``) reads the repository's folder when there is one, else
that copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MAPPINGS = Path(__file__).resolve().parent / "mappings"


class BuildWithMappings(build_py):
    """``build_py`` that also copies ``mappings/*.yaml`` and its README into the package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "fhir_bridge" / "_mappings"
        target.mkdir(parents=True, exist_ok=True)
        for path in [*sorted(MAPPINGS.glob("*.yaml")), MAPPINGS / "README.md"]:
            shutil.copy2(path, target / path.name)


setup(cmdclass={"build_py": BuildWithMappings})
