"""``python -m fhir_bridge`` runs the fhir-bridge command."""

from __future__ import annotations

from fhir_bridge.cli import main

main()
