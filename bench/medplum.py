"""The Medplum peer of the interop tests as a delivery benchmark peer (``--peer medplum``).

``tests/interop/medplum_peer`` runs Medplum's own FHIR logic (``@medplum/fhir-router`` over its
in-memory repository) in one Node process: an independent server that really processes every
transaction (conditional creates and updates, searches by identifier), so its rate is what a
real partner's rate looks like, where the loopback peer only parses and answers. This wraps it
in the loopback peer's interface (``base``, ``accepted``/``refused`` counters, ``outage``,
``reset``) so ``bench.deliveries`` drives either.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.interop.peer import PEER_DIR, MedplumPeer, medplum_peer


class MedplumUnavailable(RuntimeError):
    """Node or the peer's node_modules are missing."""


@dataclass(frozen=True)
class _Counter:
    """A peer statistic read on demand (``.value``, like a ``multiprocessing.Value``)."""

    read: Callable[[], int]

    @property
    def value(self) -> int:
        """The statistic now."""
        return self.read()


class MedplumBenchPeer:
    """The running Medplum peer, seen as ``bench.peer.Peer``."""

    #: how often ``bench.deliveries`` polls the counters (each poll is an HTTP request)
    poll_seconds = 0.05

    def __init__(self, inner: MedplumPeer) -> None:
        self.inner = inner
        self.base = inner.base
        self.accepted = _Counter(lambda: int(self._stats()["byStatus"].get("200", 0)))
        self.refused = _Counter(lambda: int(self._stats()["outageAnswers"]))
        self._outage = False

    def _stats(self) -> dict[str, Any]:
        return self.inner.stats()

    @property
    def outage(self) -> bool:
        """True while every FHIR request is answered 503."""
        return self._outage

    @outage.setter
    def outage(self, on: bool) -> None:
        if on:
            self.inner.outage(503)
        else:
            self.inner.end_outage()
        self._outage = on

    def reset(self) -> None:
        """Forget every resource, the outage and the statistics."""
        self.inner.reset()
        self._outage = False


@contextmanager
def medplum_bench_peer() -> Iterator[MedplumBenchPeer]:
    """Start the Medplum peer (``make install`` puts its node_modules in place)."""
    if shutil.which("node") is None or not (PEER_DIR / "node_modules" / "@medplum").is_dir():
        raise MedplumUnavailable(
            "the Medplum peer needs `node` on PATH and "
            f"{PEER_DIR / 'node_modules'} (run `make install`)"
        )
    with medplum_peer() as inner:
        yield MedplumBenchPeer(inner)
