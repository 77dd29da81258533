"""Bulk Data ``$export`` for API callers: kick-off, status, cancel, file download, payer Groups.

Who may export what is the access policy's answer (``read_scope``): the worker applies it to
every page it reads (``services.bulk_runner``). Here: a system-level export is for the clinic's
admins; a Group is its payer's (and the clinic's); a job, its status and its files belong to
the client that kicked it off, and to anybody else they do not exist (404).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from fhir_bridge.fhir.bulk_request import ExportRequest, ManifestFile, manifest
from fhir_bridge.fhir.outcome import FhirError, Issue, error
from fhir_bridge.mapping.payer_group import payer_group
from fhir_bridge.security.principal import Principal
from fhir_bridge.security.scopes import parse_scopes
from fhir_bridge.services.access_policy import organization_id, read_scope
from fhir_bridge.services.authorization import utcnow
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store import export_jobs as jobs
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.export_read import group_members
from fhir_bridge.store.models import ExportJob

#: seconds a client is asked to wait between status requests
RETRY_AFTER_SECONDS = 2


def principal_json(principal: Principal) -> str:
    """What the worker needs to apply the caller's access (never its token)."""
    return json.dumps(
        {
            "client_id": principal.client_id,
            "role": principal.role,
            "organization": principal.organization,
            "scope": " ".join(s.text for s in principal.scopes),
        }
    )


def principal_from_json(raw: str) -> Principal:
    """The inverse of ``principal_json``."""
    data = json.loads(raw)
    return Principal(
        data["client_id"], data["role"], data["organization"], tuple(parse_scopes(data["scope"]))
    )


def _not_found(what: str, expression: str = "url") -> FhirError:
    return FhirError(404, error("not-found", f"{what} is not known", expression))


def _may_see_group(principal: Principal, group_id: str) -> bool:
    """A payer sees its own Group; the clinic sees every payer's. The token must read Coverage
    (the Group is made of Coverages)."""
    if not read_scope(principal).reads("Coverage"):
        return False
    if principal.role == "payer":
        return organization_id(principal) == group_id
    return principal.role in ("admin", "clinic")


def read_group(runtime: Runtime, principal: Principal, group_id: str) -> dict[str, Any]:
    """``Group/{id}``: the payer Organization ``group_id``'s members; 404 when not visible
    (or when no Coverage names that payer and the caller is not the payer itself)."""
    if not _may_see_group(principal, group_id):
        raise _not_found(f"Group/{group_id[:64]}")
    with read_session(runtime.sessions) as session:
        members = group_members(session, group_id)
    if not members and organization_id(principal) != group_id:
        raise _not_found(f"Group/{group_id[:64]}")
    return payer_group(group_id, members, today=utcnow().date())


def kick_off(
    runtime: Runtime, principal: Principal, request: ExportRequest, request_url: str
) -> str:
    """Queue an export; returns its job id. 404 for a Group the caller may not see; 403 for
    a system-level export by anyone but a clinic admin."""
    if request.level == "system" and principal.role != "admin":
        raise FhirError(
            403,
            Issue(
                "error",
                "forbidden",
                "A system-level $export is open to clinic administrators only",
                ("http.Authorization",),
            ),
        )
    if request.level == "group":
        read_group(runtime, principal, request.group_id or "")
    job_id = secrets.token_urlsafe(18)
    with write_session(runtime.sessions) as session:
        jobs.create_job(
            session,
            job_id=job_id,
            client_id=principal.client_id,
            principal=principal_json(principal),
            request_url=request_url,
            params=json.dumps(request.to_json()),
            now=utcnow(),
        )
    return job_id


@dataclass(frozen=True)
class JobStatus:
    """What the status URL answers: in progress (202), complete (200) or failed (5xx)."""

    status: str
    progress: str | None = None
    manifest: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    expires_in: int | None = None


def _own_job(session: Any, client_id: str, job_id: str) -> ExportJob:
    job = jobs.get_job(session, job_id)
    now = utcnow()
    if (
        job is None
        or job.client_id != client_id
        or job.status == jobs.CANCELLED
        or (job.expires_at is not None and job.expires_at <= now)
    ):
        raise _not_found("This export")
    return job


def job_status(runtime: Runtime, client_id: str, job_id: str, base_url: str) -> JobStatus:
    """The job's state as its client sees it (404 for anyone else, or once expired)."""
    with read_session(runtime.sessions) as session:
        job = _own_job(session, client_id, job_id)
        if job.status in (jobs.QUEUED, jobs.RUNNING):
            return JobStatus(job.status, progress=job.progress or job.status)
        if job.status == jobs.FAILED:
            return JobStatus(job.status, outcome=json.loads(job.error or "{}"))
        files_url = f"{base_url}/$export-file/{job_id}"
        files = [
            ManifestFile(f.kind, f.resource_type, f"{files_url}/{f.name}", f.count)
            for f in jobs.files_of(session, job.pk)
        ]
        assert job.transaction_time is not None
        assert job.expires_at is not None
        body = manifest(
            transaction_time=job.transaction_time, request_url=job.request_url, files=files
        )
        left = int((job.expires_at - utcnow()).total_seconds())
        return JobStatus(job.status, manifest=body, expires_in=max(left, 0))


def cancel(runtime: Runtime, client_id: str, job_id: str) -> None:
    """Cancel the caller's export (running or complete); 404 when it has none by that id."""
    with write_session(runtime.sessions) as session:
        job = _own_job(session, client_id, job_id)
        jobs.cancel(session, job.pk, now=utcnow())


def job_dir(runtime: Runtime, job_id: str) -> Path:
    """The folder of one job's files."""
    return runtime.settings.export_path / job_id


def export_file(runtime: Runtime, client_id: str, job_id: str, name: str) -> tuple[Path, list[str]]:
    """A completed export's file and the patients it discloses; 404 for anyone but the
    client that asked, for a file not listed, and after expiry."""
    with read_session(runtime.sessions) as session:
        job = _own_job(session, client_id, job_id)
        listed = {f.name: f for f in jobs.files_of(session, job.pk)}
    if job.status != jobs.COMPLETED or name not in listed:
        raise _not_found("This file")
    path = job_dir(runtime, job_id) / name
    if not path.is_file():
        raise _not_found("This file")
    return path, json.loads(listed[name].patients)


def expiry(runtime: Runtime) -> timedelta:
    """How long a finished export is kept."""
    return timedelta(seconds=runtime.settings.export_expiry_seconds)
