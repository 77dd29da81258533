"""marshmallow schemas of the referral inbox (/api/v1/referrals): the view and the decline body.

They document the internal API (OpenAPI, ``records.openapi``); ``api.referrals`` builds the
views and reads the decline body.
"""

from __future__ import annotations

from marshmallow import Schema, fields

ACTIONS = ("accept", "decline", "complete")


class _Open(Schema):
    class Meta:
        ordered = True


class PlacerSchema(_Open):
    system = fields.String(metadata={"description": "The EHR's placer identifier system."})
    value = fields.String(metadata={"description": "The EHR's placer identifier (PLAC)."})


class RequesterSchema(_Open):
    reference = fields.String(allow_none=True, metadata={"description": "Practitioner/<id>."})
    npi = fields.String(allow_none=True, metadata={"description": "The prescriber's NPI."})


class PrescribedSchema(_Open):
    visits = fields.Integer(allow_none=True, metadata={"description": "Visits prescribed."})
    frequency = fields.String(allow_none=True, metadata={"description": "e.g. 2 per week."})
    expires_on = fields.Date(allow_none=True, metadata={"description": "Last day it covers."})


class IssueSchema(_Open):
    severity = fields.String(metadata={"description": "warning (accepted with a remark)."})
    code = fields.String(metadata={"description": "FHIR issue type code."})
    diagnostics = fields.String(metadata={"description": "What is wrong, in words."})
    expression = fields.List(
        fields.String(), metadata={"description": "FHIRPath of the element concerned."}
    )


class ReferralViewSchema(_Open):
    """One referral as the inbox shows it."""

    id = fields.String(metadata={"description": "The referral id (its ServiceRequest's id)."})
    status = fields.String(metadata={"description": "The tracking Task's status."})
    allowed_actions = fields.List(
        fields.String(metadata={"enum": list(ACTIONS)}),
        metadata={"description": "What the clinic may do now."},
    )
    service_request = fields.String(metadata={"description": "ServiceRequest/<id>."})
    task = fields.String(metadata={"description": "Task/<id>, the tracking Task."})
    placer_identifier = fields.Nested(
        PlacerSchema, metadata={"description": "The key retries are matched on."}
    )
    patient = fields.String(allow_none=True, metadata={"description": "Patient/<id>."})
    patient_match = fields.String(
        metadata={
            "description": "reference (named by the EHR), identifier (matched), created (new: "
            "staff should check for a duplicate) or unmatched",
        }
    )
    requester = fields.Nested(RequesterSchema, metadata={"description": "Who prescribed it."})
    authored_on = fields.String(allow_none=True, metadata={"description": "When (UTC)."})
    prescribed = fields.Nested(PrescribedSchema, metadata={"description": "What it covers."})
    visits_used = fields.Integer(metadata={"description": "Documented visits based on it."})
    visits_left = fields.Integer(
        allow_none=True, metadata={"description": "Prescribed minus used; null without a count."}
    )
    warnings = fields.List(
        fields.Nested(IssueSchema), metadata={"description": "Remarks from intake."}
    )
    received_at = fields.String(metadata={"description": "First received (UTC)."})
    updated_at = fields.String(metadata={"description": "Last changed (UTC)."})


class ReferralListSchema(_Open):
    referrals = fields.List(
        fields.Nested(ReferralViewSchema), metadata={"description": "One page of referrals."}
    )
    next = fields.String(metadata={"description": "The next page; absent on the last page."})


class DeclineSchema(_Open):
    """The body of a decline: why (it goes to the physician as Task.statusReason.text)."""

    reason = fields.String(required=True, metadata={"description": "Why the clinic declines."})
