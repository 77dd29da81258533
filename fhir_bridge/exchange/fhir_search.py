"""Search a partner's FHIR server page by page, with the partner's auth.

``search_pages`` yields each searchset Bundle before asking for the next one, so the caller can
take a page in (and move its cursor) before the next request. ``next`` links are followed only
while they stay on the partner's base URL: the partner's credentials never go anywhere else.
Errors are ``SearchFailed`` with the HTTP status (None without a response) and a message safe
to log: no URL, query or body (they may carry PHI).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import requests

from fhir_bridge.exchange.auth import PartnerAuth, TokenError
from fhir_bridge.exchange.fhir_client import FHIR_JSON, registered_base
from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.poll_search import next_link

#: statuses worth trying again later (the partner is down or busy)
TRANSIENT_STATUSES = frozenset({408, 425, 429})
#: a runaway server cannot keep a poll going forever
MAX_PAGES = 1000


class SearchFailed(Exception):
    """A page could not be read; ``status`` is the partner's HTTP status, if it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """True for network trouble, timeouts, 408/425/429 and 5xx."""
        return self.status is None or self.status >= 500 or self.status in TRANSIENT_STATUSES


def search_pages(
    base: str,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    auth: PartnerAuth,
    http: requests.Session,
    timeout: float,
    max_pages: int = MAX_PAGES,
) -> Iterator[dict[str, Any]]:
    """Yield the search's Bundles, following ``next`` links on ``base`` only."""
    url: str | None = f"{base.rstrip('/')}/{resource_type}"
    query: Sequence[tuple[str, str]] | None = params
    for _ in range(max_pages):
        assert url is not None
        bundle = _get(url, query, auth=auth, http=http, timeout=timeout)
        yield bundle
        url, query = next_link(bundle), None
        if url is None:
            return
        if registered_base(url, [base]) is None:
            raise SearchFailed("the partner's next link leaves its FHIR base URL")
    raise SearchFailed(f"the search ran past {max_pages} pages")


def _get(
    url: str,
    query: Sequence[tuple[str, str]] | None,
    *,
    auth: PartnerAuth,
    http: requests.Session,
    timeout: float,
) -> dict[str, Any]:
    for attempt in (1, 2):
        try:
            headers = {"Accept": FHIR_JSON, **auth.headers()}
        except TokenError as exc:
            raise SearchFailed("no access token from the partner", exc.status or None) from None
        try:
            response = http.get(url, params=query, headers=headers, timeout=timeout)
        except requests.Timeout:
            raise SearchFailed(f"no answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            raise SearchFailed(f"could not be reached ({type(exc).__name__})") from None
        if response.status_code == 401 and attempt == 1 and auth.refresh():
            continue
        break
    if response.status_code != 200:
        raise SearchFailed(f"answered HTTP {response.status_code}", response.status_code)
    try:
        body = jsonio.loads(response.content)
    except jsonio.JsonError:
        raise SearchFailed("answered with something that is not JSON", 502) from None
    if not isinstance(body, dict):
        raise SearchFailed("answered with something that is not a Bundle", 502)
    return body
