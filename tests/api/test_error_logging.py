"""A bug answers 500 and is logged by type and stack frames: never its message, which may
quote the request or SQL values."""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError


def test_an_unexpected_error_logs_where_not_what(app, caplog):
    def explode() -> None:
        cause = ValueError("Key (value)=(P-1001) already exists")
        raise IntegrityError("INSERT ...", {"mrn": "P-1001"}, cause) from cause

    app.add_url_rule("/boom", "boom", explode)
    with caplog.at_level(logging.ERROR, logger="fhir_bridge"):
        resp = app.test_client().get("/boom")
    assert resp.status_code == 500
    assert resp.get_json()["issue"][0]["code"] == "exception"
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert record.error_type == "IntegrityError"
    assert "in explode" in record.trace
    assert "ValueError" in record.trace  # the chained cause, by type
    assert record.exc_info is None
    assert "P-1001" not in f"{record.getMessage()} {record.__dict__}"
