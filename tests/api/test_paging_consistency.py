"""Paging while others write: every page of one search sees the same snapshot."""

from __future__ import annotations

import threading

import pytest

from fhir_bridge.store.db import write_session
from fhir_bridge.store.repository import ResourceStore
from tests.factories import observation, store_all

ORIGINAL = [f"o{n:02d}" for n in range(30)]


def _obs(oid: str, day: int, value: int = 5) -> dict:
    return observation(oid, "ana", value=value, effective=f"2026-11-{day:02d}T10:00:00Z")


@pytest.fixture
def thirty(runtime):
    store_all(runtime, [_obs(oid, 1 + n % 28) for n, oid in enumerate(ORIGINAL)])


def _walk(client, url: str, between_pages) -> list[str]:
    seen: list[str] = []
    page = 0
    while url:
        body = client.get(url).get_json()
        seen += [e["resource"]["id"] for e in body.get("entry", [])]
        links = {link["relation"]: link["url"] for link in body["link"]}
        url = links.get("next", "").removeprefix("http://bridge.test")
        between_pages(page)
        page += 1
    return seen


@pytest.mark.parametrize(
    "sort", ["", "&_sort=-_lastUpdated", "&_sort=date", "&_sort=-date", "&_sort=_id"]
)
def test_writes_between_pages_neither_skip_nor_repeat(client, runtime, thirty, sort):
    def meddle(page: int) -> None:
        # move seen and unseen entries to both ends of every order, add new ones, delete one
        store_all(
            runtime,
            [
                _obs(ORIGINAL[page], 28, value=9),
                _obs(ORIGINAL[29 - page], 1, value=1),
                _obs(f"new{page}", 15),
            ],
        )
        with write_session(runtime.sessions) as session:
            ResourceStore(session).delete("Observation", ORIGINAL[20 - page])

    seen = _walk(client, f"/fhir/Observation?patient=Patient/ana&_count=7{sort}", meddle)
    assert len(seen) == len(set(seen)), "an entry was repeated"
    assert sorted(seen) == ORIGINAL, "entries were skipped or added"


def test_pages_served_during_a_concurrent_writer_are_consistent(client, runtime, thirty):
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set() and n < 400:
                store_all(
                    runtime,
                    [_obs(ORIGINAL[n % 30], 1 + (n * 7) % 28, value=n % 10), _obs(f"w{n}", 3)],
                )
                n += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            seen = _walk(
                client,
                "/fhir/Observation?code=72514-3&_count=5&_sort=-_lastUpdated",
                lambda _p: None,
            )
            assert len(seen) == len(set(seen))
            assert set(ORIGINAL) <= set(seen)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors
