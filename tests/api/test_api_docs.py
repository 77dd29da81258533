"""The internal API's docs page: Swagger UI from the installed wheel, on the bridge's own
OpenAPI document, under a Content-Security-Policy without inline scripts."""

from __future__ import annotations

import re

from tests.api.test_auth import NO_AUTH


class Anonymous:
    """A client that sends no Authorization header."""

    def __init__(self, app) -> None:
        self._client = app.test_client()

    def get(self, path: str):
        return self._client.get(path, headers=NO_AUTH)


def test_the_docs_page_and_its_document_need_no_token(app):
    anonymous = Anonymous(app)
    page = anonymous.get("/api/v1/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert 'data-spec="/api/v1/openapi.json"' in page.get_data(as_text=True)
    spec = anonymous.get("/api/v1/openapi.json")
    assert spec.status_code == 200
    assert spec.get_json()["openapi"].startswith("3.")


def test_the_rest_of_the_api_still_needs_a_token(app):
    assert Anonymous(app).get("/api/v1/sessions").status_code == 401


def test_every_script_is_a_file_of_the_bridge_and_inline_scripts_are_forbidden(app):
    anonymous = Anonymous(app)
    page = anonymous.get("/api/v1/docs")
    html = page.get_data(as_text=True)
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "default-src 'none'" in csp
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # no inline script
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("/api/v1/docs/"), src
        asset = anonymous.get(src)
        assert asset.status_code == 200, src
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        assert len(asset.get_data()) > 0


def test_assets_have_their_types_and_nothing_else_of_the_folder_is_served(app):
    anonymous = Anonymous(app)
    assert anonymous.get("/api/v1/docs/swagger-ui-bundle.js").mimetype in {
        "text/javascript",
        "application/javascript",
    }
    assert anonymous.get("/api/v1/docs/swagger-ui.css").mimetype == "text/css"
    for other in ("index.template.html", "oauth2-redirect.html", "LICENSE", "..%2Fapi_docs.py"):
        assert anonymous.get(f"/api/v1/docs/{other}").status_code == 404, other
