"""How gunicorn serves the bridge: threaded workers that never give a thread to a slow client.

gunicorn's sync workers read a request on the worker itself, so a few clients that dribble
their headers hold every worker and the service stops answering. ``HeadBufferingWorker`` is
gunicorn's threaded worker (``gthread``: a poller thread plus a pool) with one rule added: a
request goes to a pool thread only once its whole head (request line and headers) has arrived.
Until then the connection waits in the poller, where it costs a file descriptor, not a thread
(the bytes wait in the kernel's socket buffer: the check peeks, it reads nothing). A head still
incomplete ``HEAD_TIMEOUT`` seconds after it started is answered by closing the connection
(a reset: the client's unread bytes are dropped).
This is what a buffering proxy (nginx's ``client_header_timeout``) does in front of gunicorn,
built into the worker so the container needs no proxy.

Not covered: a client that sends a complete head and then dribbles a large body holds its
thread while the app reads the body (bodies are capped by ``FHIR_BRIDGE_MAX_BODY_BYTES``).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any

from gunicorn.workers.gthread import _DEFER, ThreadWorker

log = logging.getLogger(__name__)

#: seconds a client has to send a request's whole head
HEAD_TIMEOUT = 10.0
#: a head this long without its end is left to gunicorn's own limits (it refuses it)
PEEK_BYTES = 64 * 1024
_END_OF_HEAD = b"\r\n\r\n"


class HeadBufferingWorker(ThreadWorker):
    """``gthread`` that hands a connection to a pool thread only with a complete request head."""

    def handle(self, conn: Any) -> Any:
        """Serve the request if its head is complete; else back to the poller, or close."""
        state = _head_state(conn)
        if state == "complete":
            conn._head_since = None
            return super().handle(conn)
        if state == "closed":
            return False
        started = getattr(conn, "_head_since", None)
        now = time.monotonic()
        if started is None:
            conn._head_since = started = now
        if now - started > HEAD_TIMEOUT:
            log.info("request head not received in time; connection closed")
            # closed here, at once: gunicorn's graceful close would linger on the poller
            # thread, draining what the client still dribbles, for up to 2 s a connection
            conn.sock.close()
            return False
        conn.data_ready = False  # the next readable event re-checks
        return _DEFER


def _head_state(conn: Any) -> str:
    """``complete``, ``partial`` (or nothing yet) or ``closed``, without consuming a byte."""
    buffered = b""
    parser = getattr(conn, "parser", None)
    if parser is not None:  # a kept-alive connection may have read ahead into this request
        buffered = parser.unreader.buf.getvalue()
    try:
        peeked = conn.sock.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:  # nothing new yet
        return "complete" if _END_OF_HEAD in buffered else "partial"
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
            return "closed"
        raise
    if not peeked and not buffered:
        return "closed"  # readable with no bytes: the client hung up
    data = buffered + peeked
    if _END_OF_HEAD in data or len(data) >= PEEK_BYTES:
        return "complete"
    return "partial"
