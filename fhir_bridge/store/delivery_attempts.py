"""Delivery attempt history: one row per attempt, never updated, never erased by a success.

The ``delivery`` row holds the latest state (status, last error, the partner's last
OperationOutcome) and a successful retry clears its error; ``delivery_attempt`` keeps every
attempt as it happened: when it started, how long the partner took, what the worker made of it,
the HTTP status, the PHI-free error and the partner's OperationOutcome. The worker writes a
batch's attempts in the transaction that records its results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from fhir_bridge.store.models import DeliveryAttempt


@dataclass(frozen=True)
class Attempt:
    """One attempt to send a delivery, as recorded (``pk`` is None before it is stored)."""

    delivery_pk: int
    attempted_at: datetime
    result: str
    duration_ms: float | None = None
    http_status: int | None = None
    error: str | None = None
    outcome: str | None = None
    worker: str | None = None
    pk: int | None = None


def log_attempts(session: Session, attempts: Sequence[Attempt]) -> None:
    """Append ``attempts`` (one executemany)."""
    if not attempts:
        return
    rows = [{k: v for k, v in asdict(a).items() if k != "pk"} for a in attempts]
    session.execute(insert(DeliveryAttempt), rows)


def attempts_of(session: Session, delivery_pk: int) -> list[Attempt]:
    """Every attempt of one delivery, oldest first."""
    found = session.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_pk == delivery_pk)
        .order_by(DeliveryAttempt.pk)
    )
    return [
        Attempt(
            pk=row.pk,
            delivery_pk=row.delivery_pk,
            attempted_at=row.attempted_at,
            result=row.result,
            duration_ms=row.duration_ms,
            http_status=row.http_status,
            error=row.error,
            outcome=row.outcome,
            worker=row.worker,
        )
        for row in found
    ]
