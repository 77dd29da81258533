"""Use cases: each function owns its transaction boundary and calls mapping, fhir and store."""
