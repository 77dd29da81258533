"""Click command groups of the fhir-bridge CLI, added to ``fhir_bridge.cli.main``."""
