"""POST one transaction Bundle to a partner's FHIR base and classify what happened.

``send_bundle`` never raises for partner behaviour: every outcome is a ``SendResult``:
``delivered`` (2xx), ``retry`` (the partner or the network may recover: connection errors,
timeouts, 408, 425, 429, 5xx, a token endpoint that failed) or ``dead`` (the partner refused
this Bundle: any other 4xx, 3xx, or a 401 that a fresh token did not cure). Error texts carry
status codes and exception type names only; bodies and headers are never logged (PHI, secrets).
The partner's response body on a failure is kept, truncated, for the dead-letter view.

A ``batch`` Bundle is answered 200 even when entries failed: ``send_bundle(...,
bundle_type="batch")`` reads the batch-response and fails the attempt on the first entry whose
``response.status`` is not 2xx (retry for 408/425/429/5xx, else dead), keeping that entry's
OperationOutcome. ``send_parts`` sends the ordered Bundles of one delivery
(``mapping.delivery_split``) one after the other; the delivery succeeds when every part did.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import requests

from fhir_bridge.exchange.auth import PartnerAuth
from fhir_bridge.exchange.backoff import retry_after_seconds

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
#: the most of a partner's response body (an OperationOutcome) we keep
MAX_OUTCOME_BYTES = 64 * 1024
RETRYABLE_STATUSES = frozenset({408, 425, 429})

Outcome = Literal["delivered", "retry", "dead"]


@dataclass(frozen=True)
class SendResult:
    """What one delivery attempt came to.

    ``status`` is the HTTP status of the last response (None without one); ``error`` a short
    PHI-free reason (None when delivered); ``retry_after`` the seconds a ``Retry-After`` asked
    for; ``outcome_body`` the partner's response body on a failure (UTF-8, at most 64 KB).
    """

    outcome: Outcome
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    outcome_body: str | None = None
    elapsed_ms: float = 0.0

    @property
    def delivered(self) -> bool:
        """True on a 2xx."""
        return self.outcome == "delivered"


def truncate_body(content: bytes, limit: int = MAX_OUTCOME_BYTES) -> str | None:
    """The body as text, cut at ``limit`` bytes on a character boundary; None when empty."""
    if not content:
        return None
    if len(content) > limit:
        # a multi-byte character cut in two at the end is dropped, not replaced
        return content[:limit].decode("utf-8", errors="ignore")
    return content.decode("utf-8", errors="replace")


def _entry_status(entry: object) -> int | None:
    """The HTTP status of a batch-response entry (``"201 Created"`` -> 201)."""
    response = entry.get("response") if isinstance(entry, dict) else None
    status = response.get("status") if isinstance(response, dict) else None
    head = str(status or "").strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _batch_failure(content: bytes, status: int) -> SendResult | None:
    """The first failed entry of a batch-response as a failure (None: every entry 2xx)."""
    try:
        answer = json.loads(content or b"null")
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("type") != "batch-response":
        return SendResult(
            "dead",
            status=status,
            error=f"partner answered a batch without a batch-response Bundle (HTTP {status})",
            outcome_body=truncate_body(content),
        )
    for number, entry in enumerate(answer.get("entry") or [], start=1):
        entry_status = _entry_status(entry)
        if entry_status is not None and 200 <= entry_status < 300:
            continue
        outcome = entry.get("response", {}).get("outcome") if isinstance(entry, dict) else None
        retry = entry_status in RETRYABLE_STATUSES or (entry_status or 0) >= 500
        return SendResult(
            "retry" if retry else "dead",
            status=entry_status,
            error=f"partner refused batch entry {number} (HTTP {entry_status})",
            outcome_body=(
                truncate_body(json.dumps(outcome).encode()) if isinstance(outcome, dict) else None
            ),
        )
    return None


def _classify(
    response: requests.Response, now: datetime, bundle_type: str = "transaction"
) -> SendResult:
    status = response.status_code
    if 200 <= status < 300:
        if bundle_type == "batch":
            failed = _batch_failure(response.content, status)
            if failed is not None:
                return failed
        return SendResult("delivered", status=status)
    body = truncate_body(response.content)
    if status in RETRYABLE_STATUSES or status >= 500:
        return SendResult(
            "retry",
            status=status,
            error=f"partner answered HTTP {status}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After"), now),
            outcome_body=body,
        )
    if 300 <= status < 400:
        error = f"partner answered a redirect (HTTP {status}): check the partner's base URL"
    elif status in (401, 403):
        error = f"partner refused our credentials (HTTP {status})"
    else:
        error = f"partner refused the Bundle (HTTP {status})"
    return SendResult("dead", status=status, error=error, outcome_body=body)


def _auth_headers(auth: PartnerAuth) -> dict[str, str] | SendResult:
    """The auth headers, or a retry result when they cannot be had (token endpoint, secret)."""
    try:
        return auth.headers()
    except Exception as exc:  # TokenError, SecretUnavailable ...: messages name no secret
        return SendResult("retry", error=f"no credentials for the partner ({type(exc).__name__})")


def send_bundle(
    base_url: str,
    bundle_bytes: bytes,
    *,
    auth: PartnerAuth,
    session: requests.Session,
    timeout: float | tuple[float, float],
    now: datetime | None = None,
    log_context: Mapping[str, object] | None = None,
    bundle_type: str = "transaction",
) -> SendResult:
    """POST ``bundle_bytes`` (a transaction or batch Bundle) to ``base_url``; see the module
    docstring.

    A 401 calls ``auth.refresh()`` and, when it says so, retries once at once with fresh
    headers; a second 401 (or a refresh that declines) is a dead letter like any 4xx.
    ``now`` (naive or aware UTC) reads HTTP-date ``Retry-After`` values; default the clock.
    ``log_context`` (ids only: partner key, delivery id, worker) joins the "bundle sent" line.
    """
    started = time.perf_counter()
    result = _send(
        base_url,
        bundle_bytes,
        auth=auth,
        session=session,
        timeout=timeout,
        now=now,
        bundle_type=bundle_type,
    )
    elapsed = round((time.perf_counter() - started) * 1000, 2)
    log.info(
        "bundle sent",
        extra={
            **(log_context or {}),
            "outcome": result.outcome,
            "status": result.status,
            "ms": elapsed,
        },
    )
    return SendResult(**{**result.__dict__, "elapsed_ms": elapsed})


def _send(
    base_url: str,
    bundle_bytes: bytes,
    *,
    auth: PartnerAuth,
    session: requests.Session,
    timeout: float | tuple[float, float],
    now: datetime | None,
    bundle_type: str,
) -> SendResult:
    refreshed = False
    while True:
        headers = _auth_headers(auth)
        if isinstance(headers, SendResult):
            return headers
        try:
            response = session.post(
                base_url,
                data=bundle_bytes,
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **headers},
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            return SendResult("retry", error="partner did not answer in time (timeout)")
        except requests.ConnectionError as exc:
            return SendResult("retry", error=f"partner unreachable ({type(exc).__name__})")
        except requests.RequestException as exc:
            return SendResult("retry", error=f"request failed ({type(exc).__name__})")
        if response.status_code == 401 and not refreshed:
            refreshed = True
            try:
                again = auth.refresh()
            except Exception:
                again = False
            if again:
                continue
        return _classify(response, now or datetime.now(UTC), bundle_type)


def send_parts(
    base_url: str,
    parts: Sequence[bytes],
    *,
    bundle_type: str,
    auth: PartnerAuth,
    session: requests.Session,
    timeout: float | tuple[float, float],
    now: datetime | None = None,
    log_context: Mapping[str, object] | None = None,
) -> SendResult:
    """Send one delivery's Bundles in order, stopping at the first that fails.

    Delivered when every part was; otherwise the failing part's result, its error prefixed
    with ``part k of n``. The time is the sum over the parts sent.
    """
    elapsed = 0.0
    result = SendResult("delivered")
    for number, part in enumerate(parts, start=1):
        context = {**(log_context or {}), "part": number} if len(parts) > 1 else log_context
        result = send_bundle(
            base_url,
            part,
            auth=auth,
            session=session,
            timeout=timeout,
            now=now,
            log_context=context,
            bundle_type=bundle_type,
        )
        elapsed += result.elapsed_ms
        if not result.delivered:
            if len(parts) > 1:
                error = f"part {number} of {len(parts)}: {result.error}"
                result = SendResult(**{**result.__dict__, "error": error})
            break
    return SendResult(**{**result.__dict__, "elapsed_ms": round(elapsed, 2)})
