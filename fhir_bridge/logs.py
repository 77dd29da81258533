"""Structured JSON logging with a per-request id. Log lines carry ids and codes, never PHI."""

from __future__ import annotations

import logging
import sys
import traceback
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Attach the current request id (if any) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def new_request_id(incoming: str | None = None) -> str:
    """Use a well-formed incoming X-Request-ID, else mint one."""
    if incoming and len(incoming) <= 128 and incoming.replace("-", "").isalnum():
        return incoming
    return uuid.uuid4().hex


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Send the bridge's logs to stderr, one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
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
