"""``GET /api/v1/docs``: the internal API's OpenAPI document as a readable, tryable page.

Swagger UI's files come from the ``flask-swagger-ui`` wheel (its ``dist`` folder: installed
with the bridge, never fetched from a CDN); only that package's assets are used, not its
blueprint, whose page starts Swagger UI with an inline script. Ours starts it from
``static/api-docs.js``, so the page's Content-Security-Policy allows scripts from the bridge
only. The page and the document hold no data; requests tried from it need a bearer token
("Authorize"), like any other client's.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, abort, send_from_directory, url_for

api_docs = Blueprint("api_docs", __name__, url_prefix="/api/v1/docs")

SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
OWN_STATIC = Path(__file__).resolve().parent / "static"
#: the Swagger UI files the page loads (nothing else of the folder is served)
SWAGGER_FILES = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"}
)
#: the bridge's own: the script that starts Swagger UI and the colours that fix its contrast
OWN_FILES = frozenset({"api-docs.js", "api-docs.css"})
#: Swagger UI sets style attributes and draws data: images; everything else is the bridge's
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fhir-bridge internal API</title>
<link rel="stylesheet" href="{css}">
<link rel="stylesheet" href="{own_css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<main id="swagger-ui" data-spec="{spec}"></main>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


@api_docs.get("")
def page() -> Response:
    """The Swagger UI page for ``/api/v1/openapi.json``."""
    html = _PAGE.format(
        css=url_for("api_docs.asset", filename="swagger-ui.css"),
        own_css=url_for("api_docs.asset", filename="api-docs.css"),
        icon=url_for("api_docs.asset", filename="favicon-32x32.png"),
        bundle=url_for("api_docs.asset", filename="swagger-ui-bundle.js"),
        init=url_for("api_docs.asset", filename="api-docs.js"),
        spec=url_for("sessions_api.openapi"),
    )
    response = Response(html, mimetype="text/html")
    return _secured(response)


@api_docs.get("/<filename>")
def asset(filename: str) -> Response:
    """One of the page's files: Swagger UI's, or the script that starts it."""
    if filename in OWN_FILES:
        response = send_from_directory(OWN_STATIC, filename, max_age=3600)
    elif filename in SWAGGER_FILES:
        response = send_from_directory(SWAGGER_UI_DIST, filename, max_age=86400)
    else:
        abort(404)
    return _secured(response)


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
