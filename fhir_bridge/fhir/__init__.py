"""FHIR R4 primitives: validation, OperationOutcome, search parameters. Imports nothing of ours."""
