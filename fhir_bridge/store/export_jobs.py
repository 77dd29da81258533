"""Bulk Data export jobs: create, claim with a lease, renew, complete, cancel, expire.

* **One runner per job.** A claim takes the oldest queued job, or a running one whose lease has
  run out (its worker died); on PostgreSQL the row is locked ``FOR UPDATE SKIP LOCKED`` so two
  workers never take the same job; SQLite serialises writers (``BEGIN IMMEDIATE``).
* **Fencing.** The lease value is the claim's token: renewing and completing change the row
  only while it still holds that value and is running, so a worker whose lease was taken
  over (or whose job was cancelled) can never list its files.
* **Files are listed at completion only**, in the transaction that marks the job completed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from fhir_bridge.store.models import ExportFile, ExportJob

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
)


@dataclass(frozen=True)
class NewFile:
    """A file a completing job lists."""

    kind: str
    resource_type: str
    name: str
    count: int
    patients: str


def create_job(
    session: Session,
    *,
    job_id: str,
    client_id: str,
    principal: str,
    request_url: str,
    params: str,
    now: datetime,
) -> ExportJob:
    """Queue a new job."""
    job = ExportJob(
        job_id=job_id,
        client_id=client_id,
        principal=principal,
        request_url=request_url,
        params=params,
        status=QUEUED,
        attempts=0,
        created_at=now,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> ExportJob | None:
    """The job with this id, if any."""
    return session.scalars(select(ExportJob).where(ExportJob.job_id == job_id)).one_or_none()


def claim(session: Session, *, now: datetime, lease_seconds: float) -> ExportJob | None:
    """Lease the oldest job that is queued or abandoned; None when there is none."""
    due = or_(
        ExportJob.status == QUEUED,
        (ExportJob.status == RUNNING) & (ExportJob.lease_until < now),
    )
    stmt = select(ExportJob).where(due).order_by(ExportJob.pk).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    job = session.scalars(stmt).one_or_none()
    if job is None:
        return None
    job.status = RUNNING
    job.lease_until = now + timedelta(seconds=lease_seconds)
    job.attempts = (job.attempts or 0) + 1
    session.flush()
    return job


def _ours(pk: int, lease: datetime):
    return (ExportJob.pk == pk) & (ExportJob.lease_until == lease) & (ExportJob.status == RUNNING)


def renew(session: Session, pk: int, lease: datetime, new_lease: datetime, progress: str) -> bool:
    """Extend our lease (and say how far we are); False when the job is no longer ours."""
    result = session.execute(
        update(ExportJob)
        .where(_ours(pk, lease))
        .values(lease_until=new_lease, progress=progress)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_snapshot(
    session: Session, pk: int, lease: datetime, snapshot: int, transaction_time: datetime
) -> bool:
    """Fix what the export reads as of (first claim only: a restart keeps it)."""
    result = session.execute(
        update(ExportJob)
        .where(_ours(pk, lease), ExportJob.snapshot.is_(None))
        .values(snapshot=snapshot, transaction_time=transaction_time)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def complete(
    session: Session,
    pk: int,
    lease: datetime,
    files: Iterable[NewFile],
    *,
    now: datetime,
    expires_at: datetime,
) -> bool:
    """Mark the job completed and list its files, if it is still ours."""
    result = session.execute(
        update(ExportJob)
        .where(_ours(pk, lease))
        .values(
            status=COMPLETED,
            lease_until=None,
            progress="complete",
            completed_at=now,
            expires_at=expires_at,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.add_all(
        ExportFile(
            job_pk=pk,
            kind=f.kind,
            resource_type=f.resource_type,
            name=f.name,
            count=f.count,
            patients=f.patients,
        )
        for f in files
    )
    session.flush()
    return True


def fail(
    session: Session, pk: int, lease: datetime, outcome: str, *, now: datetime, expires_at: datetime
) -> bool:
    """Mark the job failed with an OperationOutcome (JSON), if it is still ours."""
    result = session.execute(
        update(ExportJob)
        .where(_ours(pk, lease))
        .values(status=FAILED, lease_until=None, error=outcome, completed_at=now)
        .values(expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def cancel(session: Session, pk: int, *, now: datetime) -> None:
    """Cancel a job (whatever its state): a runner notices at its next renewal; the worker
    removes its files."""
    session.execute(
        update(ExportJob)
        .where(ExportJob.pk == pk)
        .values(status=CANCELLED, lease_until=None, expires_at=now)
        .execution_options(synchronize_session=False)
    )


def files_of(session: Session, job_pk: int) -> Sequence[ExportFile]:
    """The files of a completed job, in the order they were listed."""
    return session.scalars(
        select(ExportFile).where(ExportFile.job_pk == job_pk).order_by(ExportFile.pk)
    ).all()


def expired(session: Session, now: datetime, limit: int = 100) -> list[tuple[int, str]]:
    """(pk, job id) of jobs past their expiry."""
    rows = session.execute(
        select(ExportJob.pk, ExportJob.job_id)
        .where(ExportJob.expires_at < now)
        .order_by(ExportJob.pk)
        .limit(limit)
    ).all()
    return [(pk, job_id) for pk, job_id in rows]


def remove(session: Session, pks: Sequence[int]) -> None:
    """Delete jobs and their file rows."""
    if pks:
        session.execute(delete(ExportFile).where(ExportFile.job_pk.in_(pks)))
        session.execute(delete(ExportJob).where(ExportJob.pk.in_(pks)))
