"""Outbound: talking to partners' FHIR servers."""
