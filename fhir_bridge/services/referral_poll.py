"""Pull mode: take in referrals from physicians' servers that do not push them.

For each enabled physician partner whose events include ``poll-referrals``, the partner's FHIR
server is searched (with its auth) for ServiceRequests whose performer is the clinic and for
fulfil Tasks the clinic owns, changed since that search's cursor, oldest first, page by page.
Every match goes through the same intake as a pushed referral (``fhir_write.create`` with the
intake policy); what the page included (patient, requester, the Task's focus) is handed to the
intake as already fetched. Intake is idempotent on the placer identifier, so the overlap at the
cursor (``_lastUpdated=ge``) is harmless; a body already taken in is not offered again.

After a page was taken in, its cursor moves to the page's highest ``meta.lastUpdated``. A
referral the intake refuses (4xx) is kept (``inbound_payload``, channel ``poll-refused``),
logged by issue code and element, and passed over. A network error, a 5xx (or 408/425/429) at
the partner, or a transient intake failure stops that partner's poll with the cursor where it
was; the next partner is still polled. Logs carry partner keys and counts only: no ids, names
or URLs.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from fhir_bridge.exchange.auth import (
    AuthConfigError,
    PartnerAuth,
    SecretUnavailable,
    partner_auth,
)
from fhir_bridge.exchange.fhir_search import SearchFailed, search_pages
from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir import poll_search as plan
from fhir_bridge.fhir.outcome import FhirError
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.services import fhir_write
from fhir_bridge.services.partners import POLL_EVENT
from fhir_bridge.services.referral_intake import IntakePolicy, is_fulfil_task
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.partners import PartnerRow, PartnerStore
from fhir_bridge.store.poll_state import load_cursor, save_cursor, seen_payload
from fhir_bridge.store.repository import ResourceStore

log = logging.getLogger(__name__)

#: ``inbound_payload.channel`` of what a poll took in, and of what the intake refused
CHANNEL = "poll"
REFUSED_CHANNEL = "poll-refused"
POLLED_TYPES = ("ServiceRequest", "Task")
DEFAULT_PAGE_SIZE = 50
#: intake answers that mean "try again later", not "this referral is wrong"
_TRANSIENT_INTAKE = frozenset({408, 409, 425, 429})
FHIR_JSON = "application/fhir+json"

AuthFactory = Callable[[PartnerRow, requests.Session], PartnerAuth]


class NotPollable(LookupError):
    """``--partner`` names no partner, or one that is not an enabled, polled physician."""


class _Stop(Exception):
    """This partner's poll stops here (cursor kept); ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class PollResult:
    """What one partner's poll did: counts, and why it stopped early (``error``)."""

    partner: str
    taken: int = 0
    unchanged: int = 0
    refused: int = 0
    skipped: int = 0
    pages: int = 0
    cursors_moved: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when every search ran to its last page."""
        return self.error is None

    def summary(self) -> str:
        """One line for the operator (no PHI)."""
        counts = (
            f"{self.taken} taken in, {self.unchanged} unchanged, {self.refused} refused, "
            f"{self.skipped} not for the clinic, {self.pages} pages"
        )
        if self.error:
            return f"{self.partner}: {counts}; stopped: {self.error} (cursor kept)"
        return f"{self.partner}: {counts}"


def wants_polling(partner: PartnerRow) -> bool:
    """True for an enabled physician partner whose events include ``poll-referrals``."""
    return partner.enabled and partner.kind == "physician" and POLL_EVENT in partner.events


def intake_policy(settings: Settings, tables: MappingTables) -> IntakePolicy:
    """The intake policy a pushed referral gets, for a referral pulled now."""
    return IntakePolicy(
        services=tables.referral_services,
        clinic_name=settings.clinic_name,
        clinic_npi=settings.clinic_npi,
        clinic_system_base=settings.clinic_system_base,
    )


def default_auth(partner: PartnerRow, http: requests.Session) -> PartnerAuth:
    """The partner's configured auth (none, bearer, SMART Backend Services)."""
    return partner_auth(partner.auth_kind, partner.auth, session=http)


class Poller:
    """Polls physicians' servers for referrals; one instance per process (it caches tokens)."""

    def __init__(
        self,
        runtime: Runtime,
        tables: MappingTables,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        http: requests.Session | None = None,
        auth_factory: AuthFactory = default_auth,
    ) -> None:
        self.runtime = runtime
        self.tables = tables
        self.page_size = page_size
        self.timeout = float(runtime.settings.fetch_timeout_seconds)
        self.http = http or requests.Session()
        self.auth_factory = auth_factory
        self._auth: dict[tuple[int, Any], PartnerAuth] = {}

    # -- which partners ------------------------------------------------------------------

    def partners(self, only: str | None = None) -> list[PartnerRow]:
        """The partners a cycle polls; with ``only``, that one (NotPollable otherwise)."""
        with read_session(self.runtime.sessions) as session:
            store = PartnerStore(session)
            if only is None:
                return [p for p in store.all() if wants_polling(p)]
            partner = store.get(only)
        if partner is None:
            raise NotPollable(f"no partner with key {only!r}")
        if not wants_polling(partner):
            raise NotPollable(
                f"partner {only!r} is not polled: it must be an enabled physician partner "
                f"with the event {POLL_EVENT}"
            )
        return [partner]

    def poll_all(self, only: str | None = None) -> list[PollResult]:
        """One cycle: every polled partner (or ``only``), each on its own."""
        results = []
        for partner in self.partners(only):
            try:
                result = self.poll_partner(partner)
            except Exception as exc:  # the database, a bug: the next partner still gets polled
                result = PollResult(partner.key, error=f"internal error ({type(exc).__name__})")
                log.error(
                    "referral poll failed",
                    extra={"partner": partner.key, "error_type": type(exc).__name__},
                )
            results.append(result)
        return results

    # -- one partner -----------------------------------------------------------------------

    def poll_partner(self, partner: PartnerRow) -> PollResult:
        """Search the partner for new referrals of each polled type and take them in."""
        result = PollResult(partner.key)
        try:
            auth = self._auth_for(partner)
            for resource_type in POLLED_TYPES:
                self._poll_type(partner, resource_type, auth, result)
        except _Stop as stop:
            result.error = stop.reason
        level = logging.INFO if result.ok else logging.WARNING
        log.log(
            level,
            "referral poll done" if result.ok else "referral poll stopped",
            extra={
                "partner": partner.key,
                "taken": result.taken,
                "unchanged": result.unchanged,
                "refused": result.refused,
                "skipped": result.skipped,
                "pages": result.pages,
                "reason": result.error,
            },
        )
        return result

    def _auth_for(self, partner: PartnerRow) -> PartnerAuth:
        cache_key = (partner.pk, partner.updated_at)
        if cache_key not in self._auth:
            try:
                self._auth[cache_key] = self.auth_factory(partner, self.http)
            except (AuthConfigError, SecretUnavailable) as exc:
                raise _Stop(f"auth not usable ({type(exc).__name__})") from None
        return self._auth[cache_key]

    def _poll_type(
        self, partner: PartnerRow, resource_type: str, auth: PartnerAuth, result: PollResult
    ) -> None:
        name = plan.cursor_name(partner.key, resource_type)
        with read_session(self.runtime.sessions) as session:
            since = load_cursor(session, name)
        settings = self.runtime.settings
        params = plan.search_params(resource_type, settings.clinic_npi, since, self.page_size)
        policy = intake_policy(settings, self.tables)
        pages = search_pages(
            partner.base_url,
            resource_type,
            params,
            auth=auth,
            http=self.http,
            timeout=self.timeout,
        )
        try:
            for bundle in pages:
                try:
                    page = plan.read_page(bundle, resource_type, partner.base_url)
                except ValueError as exc:
                    raise _Stop(f"{resource_type} search: {exc}") from None
                result.pages += 1
                for resource in page.matches:
                    self._take_in(partner, resource_type, resource, page.included, policy, result)
                high = plan.high_water(page.matches, since)
                if high is not None and high != since:
                    with write_session(self.runtime.sessions) as session:
                        save_cursor(session, name, high)
                    since = high
                    result.cursors_moved += 1
        except SearchFailed as exc:
            raise _Stop(f"{resource_type} search {exc}") from None

    def _take_in(
        self,
        partner: PartnerRow,
        resource_type: str,
        sent: dict[str, Any],
        included: Mapping[str, dict[str, Any]],
        policy: IntakePolicy,
        result: PollResult,
    ) -> None:
        """Offer one match to the intake; count what happened (_Stop when to try later)."""
        resource = plan.absolutize(sent, partner.base_url)
        fetched = dict(included)
        if resource_type == "Task":
            focus = plan.focus_url(resource)
            if not is_fulfil_task(resource) or focus is None:
                result.skipped += 1
                return
        if not plan.addressed_to_clinic(resource, fetched, policy.clinic_npi):
            result.skipped += 1
            return
        body = jsonio.dumps(resource)
        digest = hashlib.sha256(body).hexdigest()
        with read_session(self.runtime.sessions) as session:
            if seen_payload(session, digest, (CHANNEL, REFUSED_CHANNEL)):
                result.unchanged += 1
                return
        inbound = fhir_write.Inbound(
            body=body,
            method="GET",
            path=f"poll/{partner.key}/{resource_type}",
            content_type=FHIR_JSON,
            request_id=f"poll-{uuid.uuid4().hex[:16]}",
            channel=CHANNEL,
        )
        try:
            fhir_write.create(
                self.runtime,
                resource_type,
                inbound,
                if_none_exist=None,
                policy=policy,
                fetched=fetched,
            )
        except FhirError as exc:
            if exc.status >= 500 or exc.status in _TRANSIENT_INTAKE:
                raise _Stop(f"intake answered {exc.status}; will retry") from None
            self._refused(partner, resource_type, inbound, exc)
            result.refused += 1
            return
        result.taken += 1

    def _refused(
        self, partner: PartnerRow, resource_type: str, inbound: fhir_write.Inbound, exc: FhirError
    ) -> None:
        """Keep the refused body (so it is not lost, nor offered again) and log why."""
        with write_session(self.runtime.sessions) as session:
            ResourceStore(session).keep_inbound(
                body=inbound.body,
                channel=REFUSED_CHANNEL,
                method=inbound.method,
                path=inbound.path,
                content_type=inbound.content_type,
                request_id=inbound.request_id,
                sha256=hashlib.sha256(inbound.body).hexdigest(),
            )
        errors = [i for i in exc.issues if i.severity in ("error", "fatal")]
        log.warning(
            "polled referral refused",
            extra={
                "partner": partner.key,
                "resource_type": resource_type,
                "status": exc.status,
                "payload_request_id": inbound.request_id,
                "issues": [f"{i.code} at {', '.join(i.expression) or '-'}" for i in errors],
            },
        )


class PollSchedule:
    """Runs ``poll`` when due (at most every ``every`` seconds); for the worker's loop."""

    def __init__(
        self,
        poll: Callable[[], object],
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.poll = poll
        self.every = every
        self.clock = clock
        self.next_at: float | None = None

    def run_if_due(self) -> bool:
        """Poll when due; True when it did. A failing cycle is logged (by type) and dropped."""
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            return False
        self.next_at = now + self.every
        try:
            self.poll()
        except Exception as exc:
            log.error("referral poll cycle failed", extra={"error_type": type(exc).__name__})
        return True
