"""Finding what a referral names: contained, fetched or stored resources, its patient (matched
on identifiers, or made from what the EHR sent), its requester's NPI, its patient's coverage.

Runs inside the intake's write transaction; never guesses: a patient is matched on a reference
to a Patient on file or on an identifier that finds exactly one, else made from what was sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fhir_bridge.fhir.npi import NPI_SYSTEM
from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.fhir.transaction import iter_references
from fhir_bridge.mapping.referral_keys import placer_claim, reference
from fhir_bridge.store.errors import DuplicateIdentifier
from fhir_bridge.store.referrals import ReferralRow
from fhir_bridge.store.repository import ResourceStore
from fhir_bridge.store.search import Cursor, run_search

EVERYTHING_CURSOR = Cursor(snapshot=2**62, key=None, pk=0, forward=True).encode()


class ReferralLookup:
    """Resolution of a referral's references and patient, in one write transaction."""

    def __init__(
        self, store: ResourceStore, fetched: Mapping[str, dict[str, Any]] | None = None
    ) -> None:
        self.store = store
        #: resources fetched from physician servers before the transaction, by absolute URL
        self.fetched = dict(fetched or {})
        #: placer identifier -> (patient id, how it was found) of referrals linked to a patient
        self.links: dict[tuple[str, str], tuple[str, str]] = {}

    def resolve(self, holder: Mapping[str, Any], ref: str | None) -> dict[str, Any] | None:
        """The resource a reference names: contained, fetched, or on file (this transaction)."""
        if ref is None:
            return None
        if ref.startswith("#"):
            for res in holder.get("contained") or []:
                if isinstance(res, dict) and res.get("id") == ref[1:]:
                    return res
            return None
        if ref.startswith(("http://", "https://")):
            return self.fetched.get(ref)
        type_, _, rid = ref.partition("/")
        if not type_ or not rid or "/" in rid:
            return None
        found = self.store.get(type_, rid)
        return found.resource if found is not None else None

    def patient_on_file(self, sr: Mapping[str, Any]) -> str | None:
        """The Patient id the subject names or whose identifier it carries; no creation."""
        subject = sr.get("subject")
        if not isinstance(subject, dict):
            return None
        ref = reference(subject)
        if ref is not None and ref.startswith("Patient/"):
            found = self.store.get("Patient", ref.removeprefix("Patient/"))
            return found.resource_id if found is not None else None
        for ident in self.subject_identifiers(sr):
            found = self.store.search_by_identifier("Patient", ident["system"], ident["value"])
            if len(found) == 1:
                return found[0].resource_id
        return None

    def subject_identifiers(self, sr: Mapping[str, Any]) -> list[dict[str, Any]]:
        subject = sr.get("subject")
        idents: list[Any] = []
        if isinstance(subject, dict):
            idents.append(subject.get("identifier"))
            target = self.resolve(sr, reference(subject))
            if target is not None and target.get("resourceType") == "Patient":
                idents.extend(target.get("identifier") or [])
        return [
            i
            for i in idents
            if isinstance(i, dict)
            and isinstance(i.get("system"), str)
            and isinstance(i.get("value"), str)
        ]

    def patient(self, sr: Mapping[str, Any], row: ReferralRow | None) -> tuple[str | None, str]:
        """(patient id, how it was found); creates the Patient when nothing matches."""
        if row is not None and row.patient_id is not None:
            return row.patient_id, row.patient_match
        claim = placer_claim(sr)
        if claim is not None and claim in self.links:
            return self.links[claim]  # linked before it was stored: how it was found then
        subject = sr.get("subject") if isinstance(sr.get("subject"), dict) else {}
        ref = reference(subject)
        found = self.patient_on_file(sr)
        if found is not None:
            return found, "reference" if ref and ref.startswith("Patient/") else "identifier"
        idents = self.subject_identifiers(sr)
        if not idents:
            return None, "unmatched"
        target = self.resolve(sr, ref)
        if target is None or target.get("resourceType") != "Patient":
            target = {"resourceType": "Patient", "identifier": [idents[0]]}
        body = {k: v for k, v in target.items() if k != "id"}
        first = idents[0]
        try:
            created = self.store.create(body, claim_identifiers=[(first["system"], first["value"])])
        except DuplicateIdentifier as exc:
            return exc.existing.resource_id, "identifier"
        return created.resource_id, "created"

    def coverage_on_file(self, patient_id: str) -> bool:
        query = replace(
            parse_search("Coverage", [("beneficiary", f"Patient/{patient_id}")]),
            count=1,
            cursor=EVERYTHING_CURSOR,
        )
        return bool(run_search(self.store.session, query).matches)

    def requester_npi(self, sr: Mapping[str, Any]) -> str | None:
        requester = sr.get("requester")
        if not isinstance(requester, dict):
            return None
        candidates: list[Any] = [requester.get("identifier")]
        target = self.resolve(sr, reference(requester))
        if target is not None:
            candidates.extend(target.get("identifier") or [])
            if target.get("resourceType") == "PractitionerRole":
                practitioner = self.resolve(target, reference(target.get("practitioner")))
                if practitioner is None:
                    practitioner = self.resolve(sr, reference(target.get("practitioner")))
                if practitioner is not None:
                    candidates.extend(practitioner.get("identifier") or [])
        for ident in candidates:
            if isinstance(ident, dict) and ident.get("system") == NPI_SYSTEM:
                value = ident.get("value")
                if isinstance(value, str):
                    return value
        return None

    def portable_requester(self, sr: Mapping[str, Any]) -> dict[str, Any] | None:
        """The requester as another resource may reference it (contained ones by NPI)."""
        requester = sr.get("requester")
        if not isinstance(requester, dict):
            return None
        ref = reference(requester)
        if ref is not None and not ref.startswith("#"):
            return {"reference": ref}
        npi = self.requester_npi(sr)
        if npi is None:
            return None
        kind = "Practitioner"
        target = self.resolve(dict(sr), ref)
        if target is not None and target.get("resourceType") == "PractitionerRole":
            kind = "PractitionerRole"
        return {"type": kind, "identifier": {"system": NPI_SYSTEM, "value": npi}}

    def link_subject(self, sr: dict[str, Any], row: ReferralRow | None) -> dict[str, Any]:
        """``sr`` in its patient's compartment: a contained or absolute-URL subject becomes the
        Patient on file it matches (made from the contained Patient when none does), keeping
        its display, and a contained Patient nothing else points at is dropped. The request as
        sent stays in the inbound payload. Unchanged when the subject already names a Patient
        on file, or carries nothing to match on. ``row``: the referral's inbox row, if on file."""
        subject = sr.get("subject")
        ref = reference(subject)
        if not isinstance(subject, dict) or ref is None:
            return sr
        if not ref.startswith(("#", "http://", "https://")):
            return sr
        patient_id, match = self.patient(sr, row)
        if patient_id is None:
            return sr
        claim = placer_claim(sr)
        if claim is not None:
            self.links[claim] = (patient_id, match)
        out = dict(sr)
        kept = {k: v for k, v in subject.items() if k in ("display", "identifier")}
        out["subject"] = {"reference": f"Patient/{patient_id}", **kept}
        if ref.startswith("#"):
            still = {value for _, value in iter_references(out)}
            contained = [
                c
                for c in sr.get("contained") or []
                if not (isinstance(c, dict) and c.get("id") == ref[1:] and ref not in still)
            ]
            if contained:
                out["contained"] = contained
            else:
                out.pop("contained", None)
        return out
