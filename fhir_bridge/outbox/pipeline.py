"""The delivery pipeline wired together: a worker that routes with ``outbox.routing`` and builds
with ``outbox.payload``. The worker command (``commands/deliveries.py``), the benchmarks and
the tests get their worker here; ``outbox.worker`` itself knows neither.

Payload builders are looked up per event type by ``outbox.payload`` (one builder per type), so
a new event type is a new routing rule and a new builder, not a worker change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from fhir_bridge.outbox import queue
from fhir_bridge.outbox.payload import build_payload, build_payloads
from fhir_bridge.outbox.routing import Runtime, route_pending
from fhir_bridge.outbox.worker import (
    BatchBuilder,
    PayloadBuilder,
    Router,
    Worker,
    WorkerConfig,
)

#: outbox events routed per cycle
ROUTE_LIMIT = 500


def default_router(runtime: Runtime) -> int:
    """``outbox.routing.route_pending`` for up to ROUTE_LIMIT new events."""
    return route_pending(runtime, limit=ROUTE_LIMIT)


def default_builder(clinic_system_base: str) -> PayloadBuilder:
    """``outbox.payload.build_payload`` for a claimed row's outbox event."""

    def build(session: Session, job: queue.Job) -> dict[str, Any]:
        return build_payload(session, job, clinic_system_base=clinic_system_base)

    return build


def default_batch_builder(clinic_system_base: str) -> BatchBuilder:
    """``outbox.payload.build_payloads``: a batch's Bundles from a few reads."""

    def build_many(session: Session, outbox_pks: Sequence[int]) -> Mapping[int, Any]:
        return build_payloads(session, outbox_pks, clinic_system_base=clinic_system_base)

    return build_many


def make_worker(
    runtime: Runtime,
    config: WorkerConfig,
    *,
    clock: Callable[[], Any],
    sleep: Callable[[float], object],
    route: Router | None = None,
    build: PayloadBuilder | None = None,
    **collaborators: Any,
) -> Worker:
    """A worker on the default router and builders (``route``/``build`` replace them; a
    caller's own ``build`` is then used row by row). ``collaborators``: ``http``,
    ``auth_factory``."""
    base = runtime.settings.clinic_system_base
    return Worker(
        runtime,
        config,
        route=route or default_router,
        build=build or default_builder(base),
        build_many=default_batch_builder(base) if build is None else None,
        clock=clock,
        sleep=sleep,
        **collaborators,
    )
