"""The transaction Bundle of a ``report.generated`` event (pure, no I/O).

Two entries, keyed on business identifiers like every delivery Bundle
(``mapping.delivery_bundle``), so a re-sent report never adds a resource at the partner:

* the Patient: conditional create (``ifNoneExist``) on the clinic MRN, so ``subject`` resolves;
* the DocumentReference: conditional update (``PUT DocumentReference?identifier=...``) on its
  ``<clinic base>/report`` identifier (``<referral id>/<kind>``): a regenerated report is a new
  version of the partner's one resource.

The ServiceRequest, Procedures, Observations and the author it links are not sent: their
references become logical ones (the referral's placer identifier, the therapist's NPI, the
clinic's session identifiers) as in the visit Bundles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# the builder's keyed entries and reference rewriting, shared with the visit and referral Bundles
from fhir_bridge.mapping.delivery_bundle import (
    BundleInputError,
    ClinicSystems,
    _bundle,
    _Entry,
    _identifier,
)

Resource = Mapping[str, Any]


def report_bundle(
    *,
    patient: Resource,
    document: Resource,
    linked: Mapping[str, Resource] | None = None,
    clinic_system_base: str,
) -> dict[str, Any]:
    """The Bundle carrying one report DocumentReference and its patient.

    ``linked`` maps ``Type/id`` to resources referenced but not sent (for logical references).
    """
    systems = ClinicSystems(clinic_system_base)
    mrn = _identifier(patient, systems.mrn)
    if mrn is None:
        raise BundleInputError(f"Patient/{patient.get('id')} has no {systems.mrn} identifier")
    report_system = f"{clinic_system_base}/report"
    key = _identifier(document, report_system)
    if key is None:
        raise BundleInputError(
            f"DocumentReference/{document.get('id')} has no {report_system} identifier"
        )
    entries = [
        _Entry(patient, systems.mrn, mrn, conditional_create=True),
        _Entry(document, report_system, key),
    ]
    return _bundle(entries, linked or {}, systems)
