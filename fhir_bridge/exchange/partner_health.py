"""Partner health as one worker process sees it: an alert once per incident, a note on recovery.

An incident starts at the first failure after a success, or at ``alert_after`` failures in a
row when no send to the partner has succeeded yet in this process. The alert is an ERROR log
line and, when configured, a webhook POST; both carry ids and codes only, never a payload.
The state lives in this process's memory: each worker process alerts on its own, and a restart
forgets (a partner still failing alerts again after ``alert_after`` failures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import requests

from fhir_bridge.exchange.sender import SendResult
from fhir_bridge.store.partners import PartnerRow

log = logging.getLogger(__name__)


@dataclass
class _Health:
    """One partner's state as this process saw it."""

    failures: int = 0
    succeeded: bool = False
    alerted: bool = False


class PartnerHealth:
    """Tracks send results per partner and raises the alerts (see the module docstring)."""

    def __init__(
        self,
        *,
        worker_id: str,
        clock: Callable[[], datetime],
        http: requests.Session,
        webhook: str | None,
        alert_after: int,
    ) -> None:
        self.worker_id = worker_id
        self.clock = clock
        self.http = http
        self.webhook = webhook
        self.alert_after = alert_after
        self._health: dict[int, _Health] = {}

    def record(self, partner: PartnerRow, result: SendResult) -> None:
        """Note one send's result; alert when an incident starts, log when it ends."""
        health = self._health.setdefault(partner.pk, _Health())
        if result.delivered:
            if health.alerted:
                log.warning("partner %s recovered", partner.key, extra={"partner": partner.key})
            self._health[partner.pk] = _Health(succeeded=True)
            return
        health.failures += 1
        if health.alerted:
            return
        if health.succeeded or health.failures >= self.alert_after:
            health.alerted = True
            self._alert(partner, result, health.failures)

    def _alert(self, partner: PartnerRow, result: SendResult, failures: int) -> None:
        log.error(
            "partner %s failing",
            partner.key,
            extra={
                "partner": partner.key,
                "failures": failures,
                "status": result.status,
                "error": result.error,
                "worker": self.worker_id,
            },
        )
        if not self.webhook:
            return
        body = {
            "event": "partner.failing",
            "partner": partner.key,
            "failures": failures,
            "last_status": result.status,
            "last_error": result.error,
            "worker": self.worker_id,
            "at": self.clock().isoformat(timespec="seconds") + "Z",
        }
        try:
            self.http.post(self.webhook, json=body, timeout=5)
        except requests.RequestException as exc:
            log.warning("alert webhook failed", extra={"error_type": type(exc).__name__})
