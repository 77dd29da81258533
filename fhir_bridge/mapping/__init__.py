"""Pure mapping between clinic records and FHIR, driven by the tables in ``mappings/``."""
