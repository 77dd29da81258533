"""POST _search takes its parameters from a form body: a NUL there is a 400 too."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "form",
    [
        {"name": "riv\x00era"},
        {"subject": "pat\x00-1"},
        {"_id": "a\x00"},
        {"identifier": "sys|\x00"},
        {"_cursor": "\x00"},
        {"gen\x00der": "female"},
    ],
)
def test_a_nul_in_a_post_search_form_is_a_400(client, form):
    resp = client.post(
        "/fhir/Patient/_search" if "subject" not in form else "/fhir/Observation/_search",
        data=form,
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert all(i.get("expression") for i in resp.get_json()["issue"])
