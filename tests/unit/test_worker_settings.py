"""Delivery worker settings: read from FHIR_BRIDGE_* variables, checked, mapped onto the Worker."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from fhir_bridge.outbox.worker import WorkerConfig
from fhir_bridge.settings import Settings, SettingsError


def test_defaults_are_the_documented_policy() -> None:
    s = Settings()
    assert s.delivery_backoff_base_seconds == 10
    assert s.delivery_backoff_cap_seconds == 3600
    assert s.delivery_give_up_hours == 72
    assert (s.delivery_lease_seconds, s.delivery_batch_size) == (120, 20)
    assert (s.delivery_timeout_seconds, s.worker_idle_seconds) == (10, 5)
    assert s.alert_webhook_url == ""


def test_read_from_the_environment() -> None:
    env = {
        "FHIR_BRIDGE_DELIVERY_BACKOFF_BASE_SECONDS": "2.5",
        "FHIR_BRIDGE_DELIVERY_BACKOFF_CAP_SECONDS": "600",
        "FHIR_BRIDGE_DELIVERY_GIVE_UP_HOURS": "24",
        "FHIR_BRIDGE_DELIVERY_LEASE_SECONDS": "90",
        "FHIR_BRIDGE_DELIVERY_BATCH_SIZE": "50",
        "FHIR_BRIDGE_DELIVERY_TIMEOUT_SECONDS": "4",
        "FHIR_BRIDGE_WORKER_IDLE_SECONDS": "0.5",
        "FHIR_BRIDGE_ALERT_WEBHOOK_URL": "https://ops.example.org/hook",
    }
    s = Settings.from_env(env)
    assert s.delivery_backoff_base_seconds == 2.5
    assert s.delivery_backoff_cap_seconds == 600
    assert s.delivery_give_up_hours == 24
    assert (s.delivery_lease_seconds, s.delivery_batch_size) == (90, 50)
    assert (s.delivery_timeout_seconds, s.worker_idle_seconds) == (4, 0.5)
    assert s.alert_webhook_url == "https://ops.example.org/hook"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DELIVERY_BACKOFF_BASE_SECONDS", "ten", "expected a number"),
        ("DELIVERY_BACKOFF_BASE_SECONDS", "nan", "finite"),
        ("DELIVERY_BACKOFF_BASE_SECONDS", "0", "greater than 0"),
        ("DELIVERY_BACKOFF_CAP_SECONDS", "5", "must not be below"),
        ("DELIVERY_GIVE_UP_HOURS", "-1", "greater than 0"),
        ("DELIVERY_LEASE_SECONDS", "30", "more than 3 x"),
        ("DELIVERY_BATCH_SIZE", "2.5", "expected an integer"),
        ("DELIVERY_BATCH_SIZE", "0", "greater than 0"),
        ("DELIVERY_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("WORKER_IDLE_SECONDS", "-0.1", "must not be negative"),
        ("ALERT_WEBHOOK_URL", "ops.example.org/hook", "http(s) URL"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^FHIR_BRIDGE_{variable}: .*") as raised:
        Settings.from_env({f"FHIR_BRIDGE_{variable}": value})
    assert message in str(raised.value)


def test_worker_config_from_settings() -> None:
    settings = Settings(
        database_url="sqlite://",
        delivery_backoff_base_seconds=1,
        delivery_backoff_cap_seconds=60,
        delivery_give_up_hours=1.5,
        delivery_lease_seconds=45,
        delivery_batch_size=7,
        delivery_timeout_seconds=3,
        worker_idle_seconds=0.25,
        alert_webhook_url="http://127.0.0.1:9/hook",
    )
    config = WorkerConfig.from_settings(settings, worker_id="w")
    assert config.worker_id == "w"
    retry = config.retry
    assert (retry.base, retry.cap, retry.max_age) == (1, 60, timedelta(minutes=90))
    assert (config.lease_seconds, config.batch, config.timeout, config.idle_seconds) == (
        45,
        7,
        3,
        0.25,
    )
    assert config.alert_webhook == "http://127.0.0.1:9/hook"
    other = WorkerConfig.from_settings(Settings(), worker_id="w", batch=3)
    assert (other.batch, other.alert_webhook, other.timeout) == (3, None, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        other.batch = 4  # type: ignore[misc]
