"""Real processes for end-to-end tests: a gunicorn-served bridge and ``fhir-bridge worker``.

Both run as the deployment runs them (``python -m gunicorn fhir_bridge.wsgi:app``, ``python -m
fhir_bridge worker``) on a database the caller has migrated, with its environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bridge_env(database_url: str, **extra: str) -> dict[str, str]:
    """The process environment of a bridge on ``database_url`` (quiet logs unless asked)."""
    return {
        **os.environ,
        "FHIR_BRIDGE_DATABASE_URL": database_url,
        "FHIR_BRIDGE_LOG_LEVEL": "WARNING",
        **extra,
    }


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until ``base``/readyz answers 200 (RuntimeError if it does not, or the server died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the bridge exited with status {server.returncode}")
        try:
            if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("bridge did not become ready")


@contextmanager
def served_bridge(
    database_url: str,
    *,
    workers: int = 2,
    gunicorn_args: Sequence[str] = (),
    log: Path | None = None,
    **env: str,
) -> Iterator[str]:
    """A gunicorn-served bridge on a free loopback port, configured as ``fhir-bridge serve``
    configures it; yields its base URL.

    ``env`` adds ``FHIR_BRIDGE_*`` variables; ``log`` collects its stderr (else discarded).
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environ = bridge_env(database_url, FHIR_BRIDGE_PUBLIC_BASE_URL=base, **env)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "fhir_bridge.wsgi:app",
        "--config",
        "python:fhir_bridge.gunicorn_conf",  # as deployed
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--no-control-socket",
        *gunicorn_args,
    ]
    with log.open("ab") if log else open(os.devnull, "wb") as out:
        server = subprocess.Popen(
            command, env=environ, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out
        )
    try:
        wait_ready(base, server)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def start_worker(database_url: str, log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """``fhir-bridge worker ARGS`` as a process, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fhir_bridge", "worker", *args],
            env=bridge_env(database_url, FHIR_BRIDGE_PUBLIC_BASE_URL="http://bridge.test", **env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL if it lingers; the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=10)
