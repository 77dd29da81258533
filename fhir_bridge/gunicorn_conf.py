"""gunicorn settings of every deployment (``fhir-bridge serve``, the Dockerfile):
``gunicorn -c python:fhir_bridge.gunicorn_conf fhir_bridge.wsgi:app``.

Command-line flags and ``GUNICORN_CMD_ARGS`` still win; ``WEB_CONCURRENCY`` sets the number of
worker processes (gunicorn's own variable).
"""

from __future__ import annotations

import os

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
