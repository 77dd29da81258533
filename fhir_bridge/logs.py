"""Structured JSON logging with a per-request id. Log lines carry ids and codes, never PHI."""

from __future__ import annotations

import logging
import os
import sys
import traceback
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
#: the current span's (trace id, span id), set by ``fhir_bridge.tracing`` when tracing is on
_trace_ids: Callable[[], tuple[str, str] | None] | None = None


def set_trace_ids(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Where log lines get their ``trace_id`` and ``span_id`` (None: they get none)."""
    global _trace_ids
    _trace_ids = source


class RequestIdFilter(logging.Filter):
    """Attach the current request id (if any) to every record, and when tracing is on the
    current span's ``trace_id`` and ``span_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        source = _trace_ids
        if source is not None:
            ids = source()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


def new_request_id(incoming: str | None = None) -> str:
    """Use a well-formed incoming X-Request-ID, else mint one."""
    if incoming and len(incoming) <= 128 and incoming.replace("-", "").isalnum():
        return incoming
    return uuid.uuid4().hex


def _iso_time(record: logging.LogRecord) -> str:
    """The record's time as ISO 8601 in UTC, with its offset (``...T01:43:41.324+00:00``)."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class ZonedJsonFormatter(JsonFormatter):
    """JSON lines whose ``time`` carries its zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)


class ZonedFormatter(logging.Formatter):
    """Text lines whose time carries its zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)


def formatter(*, json: bool = True) -> logging.Formatter:
    """The formatter of every log line of the bridge (its own, gunicorn's, the worker's)."""
    if json:
        return ZonedJsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return ZonedFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")


def json_enabled() -> bool:
    """``FHIR_BRIDGE_LOG_JSON`` (default true), read where Settings are not at hand (gunicorn's
    own logging is configured before the app exists)."""
    return os.environ.get("FHIR_BRIDGE_LOG_JSON", "true").strip().lower() not in ("false", "0")


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Send the bridge's logs to stderr, one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(json=json))
    root = logging.getLogger("fhir_bridge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def safe_trace(exc: BaseException) -> str:
    """Where ``exc`` (and the exceptions it chains) came from: types and stack frames only.

    Never the messages: a database error's text quotes SQL values and a constraint's
    ``DETAIL`` (a duplicate MRN, say), and a validation error may quote the request. Log
    this instead of ``log.exception``.
    """
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines.append(type(current).__name__)
        frames = traceback.extract_tb(current.__traceback__)
        lines += [f"  {f.filename}:{f.lineno} in {f.name}" for f in frames]
        current = current.__cause__ or current.__context__
    return "\n".join(lines)
