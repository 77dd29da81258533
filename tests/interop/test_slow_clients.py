"""Slow or stalled clients cannot take the service down.

Fifty sockets dribble the head of a request, one byte at a time, while a normal client keeps
asking for ``/healthz`` and a FHIR read: every normal request is answered, each within a
bound, and the server closes the dribbling connections once their head is overdue. Loopback
only; every loop is bounded and the test stops by itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fhir_bridge.serving import HEAD_TIMEOUT
from tests.conftest import provision_database
from tests.support.served import bridge_env, served_bridge

ROOT = Path(__file__).resolve().parents[2]
SLOW_SOCKETS = 50
#: the longest the slow clients dribble (they stop once the server has closed them all): past
#: the server's head timeout, with room for a worker still importing the app when they connect
DRIBBLE_SECONDS = HEAD_TIMEOUT * 2
#: the slowest answer a normal request may get meanwhile
BOUND_SECONDS = 2.0

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def open_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A served bridge (SQLite, the samples, development mode: no token needed)."""
    with provision_database("sqlite", tmp_path_factory) as url:
        subprocess.run(
            [sys.executable, "-m", "fhir_bridge", "load", str(ROOT / "sample_bundles")],
            env=bridge_env(url),
            check=True,
            capture_output=True,
        )
        with served_bridge(url, FHIR_BRIDGE_DEV_OPEN_ACCESS="true") as base:
            yield base


def _dribble(port: int, stop: threading.Event, closed_by_server: list[int]) -> None:
    """Open the slow sockets and send one more head byte on each every 0.5 s, until ``stop``
    or DRIBBLE_SECONDS; count the sockets the server closed."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    socks = []
    for _ in range(SLOW_SOCKETS):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.setblocking(False)
        socks.append(s)
    sent = 0
    open_ = set(range(len(socks)))
    deadline = time.monotonic() + DRIBBLE_SECONDS
    try:
        while open_ and not stop.is_set() and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    if socks[i].recv(1024) == b"":
                        open_.discard(i)  # the server hung up
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
                    continue
                try:
                    socks[i].send(head[sent % len(head) : sent % len(head) + 1])
                except OSError:
                    open_.discard(i)
            sent += 1
            stop.wait(0.5)
    finally:
        closed_by_server.append(len(socks) - len(open_))
        for s in socks:
            s.close()


def test_fifty_dribbling_clients_do_not_stop_normal_requests(open_bridge):
    port = int(open_bridge.rsplit(":", 1)[1])
    stop = threading.Event()
    closed: list[int] = []
    slow = threading.Thread(target=_dribble, args=(port, stop, closed), daemon=True)
    slow.start()
    time.sleep(1.0)  # every slow socket is connected and has started its head
    latencies: list[float] = []
    statuses: list[int] = []
    urls = [f"{open_bridge}/healthz", f"{open_bridge}/fhir/Patient/pat-rivera-ana"]
    try:
        end = time.monotonic() + HEAD_TIMEOUT - 2
        while time.monotonic() < end:
            for url in urls:
                started = time.monotonic()
                try:
                    statuses.append(requests.get(url, timeout=BOUND_SECONDS * 2).status_code)
                except requests.RequestException:
                    statuses.append(0)
                latencies.append(time.monotonic() - started)
            time.sleep(0.2)
    finally:
        slow.join(DRIBBLE_SECONDS + 5)
        stop.set()
    assert statuses, "no request was made"
    assert set(statuses) == {200}, statuses
    assert max(latencies) < BOUND_SECONDS, sorted(latencies)[-5:]
    # the server hung up on the dribblers once their head was overdue
    assert closed == [SLOW_SOCKETS]


def test_a_client_that_hangs_up_mid_head_is_closed_at_once(open_bridge):
    port = int(open_bridge.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)
        s.shutdown(socket.SHUT_WR)  # end of file after part of a head
        started = time.monotonic()
        s.settimeout(HEAD_TIMEOUT)
        try:
            answer = s.recv(1024)
        except ConnectionResetError:
            answer = b""
        waited = time.monotonic() - started
    assert answer == b""
    assert waited < 2.0, waited  # not held (nor spun on) until the head timeout
    assert requests.get(f"{open_bridge}/healthz", timeout=2).status_code == 200
