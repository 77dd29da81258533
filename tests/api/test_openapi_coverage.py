"""The OpenAPI document covers every /api/v1 route the app serves, with the refusals every
operation may give, and its delivery schema names every field a real answer has."""

from __future__ import annotations

import re

from tests.api.test_delivery_history import peer  # noqa: F401
from tests.api.test_worker import Clock, _deliveries, _partner, _worker


def _spec(client) -> dict:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    return resp.get_json()


def test_every_api_route_is_documented_with_its_refusals(app, client):
    paths = _spec(client)["paths"]
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule == "/api/v1/openapi.json":
            continue
        if rule.endpoint.startswith("api_docs."):  # the page describing the document
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        path = path.replace("{delivery_id}", "{id}").replace("{referral_id}", "{id}")
        if "{action}" in path:  # documented per action
            assert any(p.startswith(path.split("{action}")[0]) for p in paths), path
            continue
        assert path in paths, path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            responses = paths[path][method.lower()]["responses"]
            assert {"401", "403", "429", "503"} <= set(responses), (path, method)


def test_a_real_delivery_has_only_documented_fields(runtime, client, peer):  # noqa: F811
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    _worker(runtime, Clock()).run_once()
    schemas = _spec(client)["components"]["schemas"]
    shown = client.get(f"/api/v1/deliveries/{pk}").get_json()
    assert set(shown) <= set(schemas["DeliveryView"]["properties"])
    assert set(shown["history"][0]) <= set(schemas["DeliveryAttempt"]["properties"])
    partner = client.get("/api/v1/partners/p1").get_json()
    assert set(partner) <= set(schemas["PartnerView"]["properties"])
