"""AuditEvents for the console: logins, and every page that shows PHI, like the API's.

A view calls ``audit_access`` for what it shows; the events are written when the response
closes, with its status, through the same spooled trail as the API's (``services.audit``).
The agent is ``user:<username>``, so the audit log names the staff member.
"""

from __future__ import annotations

from flask import Response, current_app, g, request

from fhir_bridge.console import console
from fhir_bridge.mapping.audit_event import Access, access_event, token_event
from fhir_bridge.services.audit import AuditTrail
from fhir_bridge.services.authorization import utcnow


def _trail() -> AuditTrail:
    return current_app.extensions["fhir_bridge_audit"]


def audit_access(
    interaction: str,
    resource_type: str | None,
    resource_id: str | None = None,
    *,
    query: str | None = None,
) -> None:
    """Note that this response shows a resource (``read``) or a search's results (``search``)."""
    g.setdefault("console_audit", []).append((interaction, resource_type, resource_id, query))


def record_login(username: str, ok: bool, refusal: str) -> None:
    """A login attempt: DICOM "User Authentication / Login", success or the reason refused."""
    event = token_event(
        client_id=f"user:{username or 'unknown'}",
        outcome="issued" if ok else "refused",
        reason=refusal,
        address=request.remote_addr,
        recorded=utcnow(),
    )
    _trail().record(event)


@console.after_request
def _write_audit(response: Response) -> Response:
    """Queue the noted accesses; they are stored after the response is sent."""
    noted = g.pop("console_audit", [])
    staff = g.get("staff")
    if not noted or staff is None:
        return response
    principal = staff.principal()
    now = utcnow()
    events = [
        access_event(
            Access(
                client_id=principal.client_id,
                role=principal.role,
                organization=None,
                interaction=interaction,
                resource_type=resource_type,
                resource_id=resource_id,
                query=query,
                status=response.status_code,
                address=request.remote_addr,
                recorded=now,
            )
        )
        for interaction, resource_type, resource_id, query in noted
    ]
    trail = _trail()
    response.call_on_close(lambda: [trail.record(e) for e in events])
    return response
