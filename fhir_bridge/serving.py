"""How gunicorn serves the bridge: threaded workers that never give a thread to a slow client.

gunicorn's sync workers read a request on the worker itself, so a few clients that dribble
their headers hold every worker and the service stops answering. ``HeadBufferingWorker`` is
gunicorn's threaded worker (``gthread``: a poller thread plus a pool) with one rule added: a
request goes to a pool thread only once its whole head (request line and headers) has arrived.
Until then the connection waits in the poller, where it costs a file descriptor, not a thread
(what has arrived is read without waiting and kept with the connection, then given to
gunicorn's parser as if it had just read it). A head still
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
        if not _read_available(conn):
            return False  # the client hung up (or reset)
        head = _read_ahead(conn) + conn._head_buf
        if _END_OF_HEAD in head or len(head) >= PEEK_BYTES:
            conn.init()  # the parser, which then reads what we took first
            unreader = conn.parser.unreader
            unreader.unread(unreader.take_buffered() + conn._head_buf)
            conn._head_buf, conn._head_since = b"", None
            return super().handle(conn)
        now = time.monotonic()
        if getattr(conn, "_head_since", None) is None:
            conn._head_since = now
        if now - conn._head_since > HEAD_TIMEOUT:
            log.info("request head not received in time; connection closed")
            # closed here, at once: gunicorn's graceful close would linger on the poller
            # thread, draining what the client still dribbles, for up to 2 s a connection
            conn.sock.close()
            return False
        conn.data_ready = False
        return _DEFER  # the poller hands it back when more bytes arrive


def _read_available(conn: Any) -> bool:
    """Take what the socket holds now into ``conn._head_buf`` without waiting (the bytes are
    consumed, so the poller reports the socket again only when more arrive); False when the
    client hung up."""
    if not hasattr(conn, "_head_buf"):
        conn._head_buf = b""
    try:
        chunk = conn.sock.recv(PEEK_BYTES, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True  # nothing new yet
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
            return False
        raise
    if not chunk:
        return False  # end of file
    conn._head_buf += chunk
    return True


def _read_ahead(conn: Any) -> bytes:
    """What gunicorn already read of this request on a kept-alive connection (not consumed)."""
    parser = getattr(conn, "parser", None)
    return parser.unreader.buf.getvalue() if parser is not None else b""
