"""Prometheus metrics: what the bridge counts as it works, and what the store holds right now.

Two kinds:

* **Counted in the process** (``REQUESTS``, ``SESSIONS_RECEIVED``, ``TOKEN_REQUESTS``): under
  gunicorn every worker process writes them to ``PROMETHEUS_MULTIPROC_DIR`` (set up by
  ``gunicorn_conf``) and a scrape adds the processes up (prometheus-client's multiprocess mode).
* **Read from the store at scrape time** (``StoreCollector``): deliveries by partner and status,
  the queue's depth and oldest pending age, outbox events not yet routed, referrals by status,
  sessions on file, and AuditEvents still in the spool. They are the same whichever process
  answers.

No label carries PHI: routes are patterns (``/fhir/Patient/<id>``), partners are keys, the rest
are statuses and outcomes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from fhir_bridge.store.db import read_session
from fhir_bridge.store.models import (
    ClinicSession,
    Delivery,
    OutboxCursor,
    OutboxEvent,
    Partner,
    Referral,
)

if TYPE_CHECKING:
    from fhir_bridge.services.runtime import Runtime

#: the in-process metrics (exposed directly when not under gunicorn's multiprocess mode)
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Histogram(
    "fhir_bridge_http_request_duration_seconds",
    "Time to answer a request, by route pattern, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SESSIONS_RECEIVED = Counter(
    "fhir_bridge_sessions_received",
    "Session records posted to /api/v1/sessions: created, replaced or refused.",
    ["result"],
    registry=REGISTRY,
)
TOKEN_REQUESTS = Counter(
    "fhir_bridge_token_requests",
    "Requests to /auth/token: tokens issued or refused.",
    ["outcome"],
    registry=REGISTRY,
)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request (and what it says about sessions and tokens)."""
    REQUESTS.labels(route, method, str(status)).observe(seconds)
    if route == "/api/v1/sessions" and method == "POST":
        result = {201: "created", 200: "replaced"}.get(status, "refused")
        SESSIONS_RECEIVED.labels(result).inc()


def observe_token(outcome: str) -> None:
    """Count one token request (``issued`` or ``refused``)."""
    TOKEN_REQUESTS.labels(outcome).inc()


class StoreCollector(Collector):
    """Gauges read from the store (and the audit spool) when Prometheus scrapes."""

    def __init__(self, runtime: Runtime, spool_dir: Path | None) -> None:
        self.runtime = runtime
        self.spool_dir = spool_dir

    def collect(self) -> Iterator[Metric]:
        """The gauges of the store as it is now."""
        now = datetime.now(UTC).replace(tzinfo=None)
        with read_session(self.runtime.sessions) as session:
            by_status = session.execute(
                select(Partner.key, Delivery.status, func.count())
                .join(Partner, Partner.pk == Delivery.partner_pk)
                .group_by(Partner.key, Delivery.status)
            ).all()
            oldest = session.scalar(
                select(func.min(Delivery.created_at)).where(Delivery.status == "pending")
            )
            routed = session.scalar(
                select(OutboxCursor.last_pk).where(OutboxCursor.name == "router")
            )
            unrouted = session.scalar(
                select(func.count()).select_from(OutboxEvent).where(OutboxEvent.pk > (routed or 0))
            )
            referrals = session.execute(
                select(Referral.status, func.count()).group_by(Referral.status)
            ).all()
            sessions = session.scalar(select(func.count()).select_from(ClinicSession))
        deliveries = GaugeMetricFamily(
            "fhir_bridge_deliveries",
            "Deliveries by partner and status.",
            labels=["partner", "status"],
        )
        for key, status, count in by_status:
            deliveries.add_metric([key, status], count)
        yield deliveries
        pending = sum(count for _key, status, count in by_status if status == "pending")
        yield GaugeMetricFamily(
            "fhir_bridge_delivery_queue_depth", "Deliveries pending (due or waiting).", pending
        )
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "fhir_bridge_delivery_oldest_pending_age_seconds",
            "Age of the oldest pending delivery (0 when none).",
            max(age, 0.0),
        )
        yield GaugeMetricFamily(
            "fhir_bridge_outbox_unrouted_events", "Outbox events the router has not read.", unrouted
        )
        by_referral = GaugeMetricFamily(
            "fhir_bridge_referrals", "Referrals in the inbox by status.", labels=["status"]
        )
        for status, count in referrals:
            by_referral.add_metric([status], count)
        yield by_referral
        yield GaugeMetricFamily("fhir_bridge_sessions_stored", "Session records on file.", sessions)
        yield GaugeMetricFamily(
            "fhir_bridge_audit_spool_events",
            "AuditEvents spooled on this node, not yet in the store.",
            _spooled(self.spool_dir),
        )


def _spooled(spool_dir: Path | None) -> int:
    """Lines in the spool files (every process's, and ones being flushed)."""
    if spool_dir is None or not spool_dir.is_dir():
        return 0
    total = 0
    for path in spool_dir.iterdir():
        try:
            with path.open("rb") as handle:
                total += sum(1 for _ in handle)
        except OSError:
            continue  # renamed or removed by a flush meanwhile
    return total


def exposition(store: StoreCollector) -> bytes:
    """The text a scrape gets: the processes' counters and histograms, then the store's gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(store)
    return generate_latest(counted) + generate_latest(gauges)
