"""Run the bridge under gunicorn on a free loopback port, for one block, configured as
``fhir-bridge serve`` runs it: ``fhir_bridge/gunicorn_conf.py`` (the threaded, head-buffering
worker of ``fhir_bridge.serving``), 2 processes of 4 threads."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WORKERS = 2
#: threads per worker process, as ``fhir-bridge serve`` defaults to
THREADS = 4
#: for A/B runs only: BENCH_WORKER_CLASS=sync serves with the sync workers the benchmarks used
#: before 2026-12-06 (one request per process at a time); unset: ``serve``'s worker
WORKER_CLASS_ENV = "BENCH_WORKER_CLASS"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Server:
    """A running bridge: where it listens and its gunicorn master process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        """http://host:port"""
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the master (graceful), then SIGKILL its process group if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # our own session: the master and its workers
        process.wait(STOP_TIMEOUT_S)


@contextmanager
def serve(database_url: str, log_path: Path) -> Iterator[Server]:
    """Start gunicorn on ``database_url``, wait for /readyz, yield, and always stop it."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        FHIR_BRIDGE_DATABASE_URL=database_url,
        FHIR_BRIDGE_PUBLIC_BASE_URL=f"http://{HOST}:{port}",
        FHIR_BRIDGE_LOG_LEVEL="WARNING",
        # requests without a token act as the clinic's admin, as before tokens were required;
        # bench.auth measures what tokens and member scoping add
        FHIR_BRIDGE_DEV_OPEN_ACCESS="true",
        FHIR_BRIDGE_RATE_LIMIT_PER_MINUTE="0",
    )
    # the same command line as `fhir-bridge serve` (fhir_bridge/cli.py)
    cmd = [
        sys.executable, "-m", "gunicorn", "fhir_bridge.wsgi:app",
        "--config", "python:fhir_bridge.gunicorn_conf",
        "--bind", f"{HOST}:{port}", "--workers", str(WORKERS), "--threads", str(THREADS),
    ]  # fmt: skip
    if os.environ.get(WORKER_CLASS_ENV) == "sync":
        cmd += ["--worker-class", "sync", "--threads", "1"]  # the last flag wins
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # own session: a Ctrl-C in the terminal reaches only us, and we stop it in order
        process = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(port):
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn not ready after {READY_TIMEOUT_S:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.2)
        yield Server(port, process, log_path)
    finally:
        _stop(process)
