"""Settings: read once, strictly, from ``FHIR_BRIDGE_*`` environment variables."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PREFIX = "FHIR_BRIDGE_"
DEFAULT_INSTANCE_DIR = Path.cwd() / "instance"


class SettingsError(ValueError):
    """A ``FHIR_BRIDGE_*`` variable holds a value the bridge cannot use."""


def parse_bool(name: str, raw: str) -> bool:
    """Parse a boolean strictly: anything but the usual spellings is an error, not False."""
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{PREFIX}{name}: invalid boolean value {raw!r}")


def parse_int(name: str, raw: str) -> int:
    """Parse an integer, naming the variable when it is not one."""
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}: expected an integer, got {raw!r}") from None


def parse_float(name: str, raw: str) -> float:
    """Parse a finite number (``10``, ``0.5``), naming the variable when it is not one."""
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{PREFIX}{name}: expected a finite number, got {raw!r}")
    return value


#: the shortest metrics token accepted (``openssl rand -hex 32`` makes 64 characters)
MIN_METRICS_TOKEN = 32


def check_metrics_token(token: str, name: str) -> str:
    """``token`` if it can be a bearer secret (long enough, no spaces), else SettingsError."""
    if len(token) < MIN_METRICS_TOKEN or any(c.isspace() for c in token) or not token.isascii():
        raise SettingsError(
            f"{PREFIX}{name}: expected at least {MIN_METRICS_TOKEN} printable ASCII characters "
            "without spaces (e.g. `openssl rand -hex 32`)"
        )
    return token


@dataclass(frozen=True)
class Settings:
    """Everything the bridge is configured with. Field ``x`` is read from ``FHIR_BRIDGE_X``."""

    # storage
    database_url: str = f"sqlite:///{DEFAULT_INSTANCE_DIR / 'fhir-bridge.db'}"
    # HTTP surface
    public_base_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = 5 * 1024 * 1024
    # the clinic's own identity
    clinic_name: str = "Example Medical Massage Clinic"
    clinic_npi: str = "1245319599"
    #: base of the clinic's identifier systems: <base>/mrn, <base>/session, <base>/goal
    clinic_system_base: str = "https://clinic.example.org/fhir"
    #: identifier system under which payer Organizations carry their payer id
    payer_id_system: str = "https://payers.example.org/payer-id"
    #: FHIR base URLs of physicians' servers the bridge may read referrals from (comma-separated)
    physician_servers: str = ""
    #: seconds to wait for a partner server
    fetch_timeout_seconds: int = 10
    #: folder of the code mapping tables; empty = the mappings/ shipped with the bridge
    mappings_dir: str = ""
    # operations
    log_level: str = "INFO"
    log_json: bool = True
    testing: bool = False
    #: development only: a request without a token acts as an admin client (``make run``)
    dev_open_access: bool = False
    #: requests per minute one client may make before answers are 429 (0: no limit)
    rate_limit_per_minute: int = 1200
    #: a search that runs longer is cancelled with a 503 (PostgreSQL statement timeout)
    search_timeout_seconds: int = 10
    #: where AuditEvents wait (JSON lines) until the database has them; default instance/audit
    audit_spool_dir: str = ""
    #: OpenTelemetry tracing (fhir_bridge/tracing.py); the exporter reads the standard
    #: OTEL_EXPORTER_OTLP_* and OTEL_SERVICE_NAME variables
    otel: bool = False
    #: a bearer secret that may read /metrics only (a Prometheus scraper), or a file holding it
    #: (a Docker secret); at least 32 characters; empty: /metrics is for admin tokens only
    metrics_token: str = ""
    metrics_token_file: str = ""
    # the delivery worker (``fhir-bridge worker``; its options override these)
    #: first retry delay; it doubles per failed attempt (full jitter) up to the cap
    delivery_backoff_base_seconds: float = 10.0
    delivery_backoff_cap_seconds: float = 3600.0
    #: a delivery failing this long since its first failed attempt becomes a dead letter
    delivery_give_up_hours: float = 72.0
    #: a claimed delivery is the worker's for this long; after it another worker may take it
    delivery_lease_seconds: float = 120.0
    #: deliveries claimed per cycle
    delivery_batch_size: int = 20
    #: seconds to wait for a partner's answer to one delivery
    delivery_timeout_seconds: float = 10.0
    #: the worker loop's poll interval: how long it waits after a cycle that found nothing due
    worker_idle_seconds: float = 5.0
    #: where to POST a JSON alert when a partner starts failing (empty: ERROR log line only)
    alert_webhook_url: str = ""
    # progress reports (``services.report_documents``)
    #: a progress report (DocumentReference) is filed after every this many visits of a
    #: referral (visits 10, 20, ...); 0: only the discharge summary when a referral completes
    report_every_visits: int = 10
    # Bulk Data $export (run by the worker)
    #: where export files are written (a folder per job); default instance/exports
    export_dir: str = ""
    #: a completed export's files (and status URL) are kept this long, then removed
    export_expiry_seconds: int = 3600
    #: a claimed export is the worker's for this long (renewed while it runs)
    export_lease_seconds: float = 60.0
    #: resources read per keyset page while exporting
    export_page_size: int = 2000
    # the clinic console
    #: a console session unused this long ends (the user logs in again)
    console_idle_minutes: int = 30
    #: a console session ends this long after login, used or not
    console_session_hours: int = 12

    def __post_init__(self) -> None:
        """Refuse delivery settings the worker cannot use, naming the variable."""
        positive = (
            "delivery_backoff_base_seconds",
            "delivery_backoff_cap_seconds",
            "delivery_give_up_hours",
            "delivery_lease_seconds",
            "delivery_batch_size",
            "delivery_timeout_seconds",
            "export_expiry_seconds",
            "export_lease_seconds",
            "export_page_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()}: must be greater than 0")
        if self.report_every_visits < 0:
            raise SettingsError(f"{PREFIX}REPORT_EVERY_VISITS: must not be negative")
        if self.worker_idle_seconds < 0:
            raise SettingsError(f"{PREFIX}WORKER_IDLE_SECONDS: must not be negative")
        if self.delivery_backoff_cap_seconds < self.delivery_backoff_base_seconds:
            raise SettingsError(
                f"{PREFIX}DELIVERY_BACKOFF_CAP_SECONDS: must not be below "
                f"{PREFIX}DELIVERY_BACKOFF_BASE_SECONDS"
            )
        # a lease must outlast one send (two timeouts on a 401 refresh, plus the token request)
        if self.delivery_lease_seconds <= 3 * self.delivery_timeout_seconds:
            raise SettingsError(
                f"{PREFIX}DELIVERY_LEASE_SECONDS: must be more than 3 x "
                f"{PREFIX}DELIVERY_TIMEOUT_SECONDS ({3 * self.delivery_timeout_seconds:g})"
            )
        if self.metrics_token and self.metrics_token_file:
            raise SettingsError(
                f"{PREFIX}METRICS_TOKEN and {PREFIX}METRICS_TOKEN_FILE: set one, not both"
            )
        if self.metrics_token:
            check_metrics_token(self.metrics_token, "METRICS_TOKEN")
        hook = urlsplit(self.alert_webhook_url)
        if self.alert_webhook_url and (hook.scheme not in ("http", "https") or not hook.netloc):
            raise SettingsError(f"{PREFIX}ALERT_WEBHOOK_URL: expected an http(s) URL")

    @property
    def fhir_base_url(self) -> str:
        """Absolute base of the FHIR endpoint, as used in Bundle links and Location headers."""
        return self.public_base_url.rstrip("/") + "/fhir"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from the environment; unknown or malformed values raise SettingsError."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            if f.type == "bool":
                values[f.name] = parse_bool(f.name.upper(), raw)
            elif f.type == "int":
                values[f.name] = parse_int(f.name.upper(), raw)
            elif f.type == "float":
                values[f.name] = parse_float(f.name.upper(), raw)
            else:
                values[f.name] = raw
        settings = cls(**values)
        return replace(settings, **overrides) if overrides else settings

    def scrape_token(self) -> str | None:
        """The metrics bearer secret (read from its file when one is named), or None.

        A file that cannot be read or holds no usable token is a SettingsError.
        """
        if self.metrics_token:
            return self.metrics_token
        if not self.metrics_token_file:
            return None
        name = "METRICS_TOKEN_FILE"
        try:
            token = Path(self.metrics_token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{PREFIX}{name}: cannot read the file ({exc})") from None
        return check_metrics_token(token, name)

    @property
    def physician_server_list(self) -> list[str]:
        """The registered physician FHIR bases, without blanks."""
        return [b.strip().rstrip("/") for b in self.physician_servers.split(",") if b.strip()]

    @property
    def export_path(self) -> Path:
        """The folder export files are written to."""
        return Path(self.export_dir) if self.export_dir else DEFAULT_INSTANCE_DIR / "exports"

    @property
    def is_sqlite(self) -> bool:
        """True when the store is the embedded SQLite database."""
        return self.database_url.startswith("sqlite")
