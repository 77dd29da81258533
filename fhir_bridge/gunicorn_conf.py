"""gunicorn settings of every deployment (``fhir-bridge serve``, the Dockerfile):
``gunicorn -c python:fhir_bridge.gunicorn_conf fhir_bridge.wsgi:app``.

Command-line flags and ``GUNICORN_CMD_ARGS`` still win; ``WEB_CONCURRENCY`` sets the number of
worker processes (gunicorn's own variable).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

#: prometheus-client's multiprocess mode: each worker writes its counters here and a scrape of
#: /metrics adds them up. Set before any process imports prometheus_client (it reads it then).
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fhir-bridge-metrics-")


def _json_logs() -> bool:
    from fhir_bridge.logs import json_enabled

    return json_enabled()


#: threaded workers that give a pool thread only to a request whose head has arrived
#: (``fhir_bridge.serving``): slow clients cannot take the service down
worker_class = "fhir_bridge.serving.HeadBufferingWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
#: requests served at once per process (they mostly wait on the database or a partner)
threads = 4
#: an idle kept-alive connection is closed after this many seconds
keepalive = 5
#: a worker that stops heartbeating this long is restarted
timeout = 60
graceful_timeout = 30
#: no control socket (it would need a writable home directory)
control_socket_disable = True

#: gunicorn's own lines (start, workers booting, errors) in the bridge's format: JSON with a
#: zone-aware time (FHIR_BRIDGE_LOG_JSON=false: text), with a request_id field like the app's
_HANDLER = {
    "class": "logging.StreamHandler",
    "formatter": "bridge",
    "filters": ["request_id"],
    "stream": "ext://sys.stderr",
}
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "fhir_bridge.logs.RequestIdFilter"}},
    "formatters": {
        "bridge": {"()": "fhir_bridge.logs.formatter", "json": _json_logs()},
    },
    "handlers": {"stderr": _HANDLER},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        # off: its lines carry the full request line, query strings included (a search by
        # MRN is PHI); the app writes its own access line with the route pattern only
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
    },
}


def on_starting(server: object) -> None:
    """A fresh start counts from zero: drop metric files a previous run left."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink()


def child_exit(server: object, worker: object) -> None:
    """A worker that exited stops contributing its live gauges (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    """Remove the metrics folder this configuration made (one set by the operator stays)."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
