"""FHIR HTTP conventions: content negotiation, response bodies, headers, the runtime handle."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from flask import Flask, Request, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.services.runtime import Runtime

FHIR_JSON = "application/fhir+json"
JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
XML_FORMATS = {"xml", "application/xml", "application/fhir+xml", "text/xml", "application/xml+fhir"}


class FhirJsonProvider(DefaultJSONProvider):
    """Flask's JSON with the bridge's parser: ``request.get_json`` never raises anything but
    a ValueError (too deep, too long a number, duplicate keys), so ``silent=True`` holds."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse with jsonio (exact decimals, bounded depth and number length)."""
        return jsonio.loads(s)


class FhirRequest(Request):
    """A request whose silent JSON peek (the security layer's) never fails on a large body:
    the body is then left for the view, which answers 413 (and the request is still audited)."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """As Flask's, but ``silent`` also covers a body over MAX_CONTENT_LENGTH."""
        limit = self.max_content_length
        if silent and limit is not None and (self.content_length or 0) > limit:
            return None
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RequestEntityTooLarge:
            if silent:
                return None
            raise


def install(app: Flask) -> None:
    """Use the bridge's request class and JSON parser on ``app``."""
    app.request_class = FhirRequest
    app.json = FhirJsonProvider(app)


def parse_json_body(body: bytes, expression: str) -> Any:
    """A request body as JSON (jsonio rules); FhirError 400 naming ``expression`` when not."""
    try:
        return jsonio.loads(body)
    except jsonio.JsonError as exc:
        raise FhirError(400, error("structure", str(exc), expression)) from None


def runtime() -> Runtime:
    """The Runtime of the current app."""
    return current_app.extensions["fhir_bridge"]


def negotiate() -> None:
    """Refuse (406) requests that want a format we do not produce: we speak JSON only."""
    fmt = request.args.get("_format")
    if fmt is not None:
        base = fmt.split(";")[0].strip().lower()
        if base in JSON_FORMATS:
            return
        raise FhirError(
            406, error("not-supported", f"_format {fmt!r} is not supported; use json", "_format")
        )
    if request.headers.get("Accept"):
        wanted = [m for m, quality in request.accept_mimetypes if quality > 0]
        if wanted and not any(_json_ok(m) for m in wanted):
            raise FhirError(
                406,
                error(
                    "not-supported", "Only application/fhir+json (or application/json) is produced"
                ),
            )


def _json_ok(mimetype: str) -> bool:
    base = mimetype.split(";")[0].strip().lower()
    return base in JSON_FORMATS or base in {"*/*", "application/*"} or base.endswith("+json")


def pretty() -> bool:
    """True when the client asked for indented JSON (``_pretty=true``)."""
    return request.args.get("_pretty", "").lower() == "true"


def fhir_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    is_pretty: bool | None = None,
) -> Response:
    """A response with an ``application/fhir+json`` body (dict or already-serialized bytes)."""
    if isinstance(body, bytes) and not (is_pretty if is_pretty is not None else pretty()):
        payload = body
    else:
        value = jsonio.loads(body) if isinstance(body, bytes) else body
        payload = jsonio.dumps(value, pretty=is_pretty if is_pretty is not None else pretty())
    response = Response(payload, status=status, mimetype=FHIR_JSON)
    response.headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def http_date(naive_utc: datetime) -> str:
    """RFC 9110 HTTP-date for a naive UTC datetime."""
    return format_datetime(naive_utc.replace(tzinfo=UTC, microsecond=0), usegmt=True)
