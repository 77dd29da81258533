"""Tables of the resource store: resources, their versions, the search index, raw inbound payloads.

Every write appends a ``resource_version`` row; its primary key is the store's global write
sequence. Index rows belong to a version and are never updated, so a search can be evaluated
"as of" any sequence number: that is what makes paging stable while others write.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite, so both autoincrement.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention Alembic can rely on."""

    metadata = MetaData(naming_convention=NAMING)


class Resource(Base):
    """The current state of one logical resource (type + id)."""

    __tablename__ = "resource"
    __table_args__ = (UniqueConstraint("resource_type", "resource_id"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    current_version_pk: Mapped[int] = mapped_column(BigId)
    last_updated: Mapped[datetime] = mapped_column(DateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class ResourceVersion(Base):
    """One version of a resource, with its JSON exactly as the store serves it."""

    __tablename__ = "resource_version"
    __table_args__ = (
        UniqueConstraint("resource_pk", "version_id"),
        Index(None, "resource_type", "pk"),
        Index(None, "resource_type", "resource_id", "pk"),
        # AUTOINCREMENT: pks are the write sequence and must never be reused on SQLite.
        {"sqlite_autoincrement": True},
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk"))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime)
    #: pk of the version that replaced this one; NULL while it is current.
    superseded_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(8))
    content: Mapped[bytes] = mapped_column(LargeBinary)


class SearchToken(Base):
    """Token values (codes, identifiers, statuses) of one version, per search parameter."""

    __tablename__ = "search_token"
    __table_args__ = (
        Index(None, "resource_type", "param", "code", "system"),
        Index(None, "version_pk", "param"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version_pk: Mapped[int] = mapped_column(ForeignKey("resource_version.pk"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    system: Mapped[str | None] = mapped_column(String(512), nullable=True)
    code: Mapped[str | None] = mapped_column(String(512), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)


class SearchReference(Base):
    """References of one version, per search parameter, split into target type and id."""

    __tablename__ = "search_reference"
    __table_args__ = (
        Index(None, "resource_type", "param", "target_id", "target_type"),
        Index(None, "version_pk", "param"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version_pk: Mapped[int] = mapped_column(ForeignKey("resource_version.pk"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reference: Mapped[str] = mapped_column(String(1024))


class SearchDate(Base):
    """Date values of one version as half-open UTC ranges [low, high)."""

    __tablename__ = "search_date"
    __table_args__ = (
        Index(None, "resource_type", "param", "low"),
        Index(None, "version_pk", "param"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version_pk: Mapped[int] = mapped_column(ForeignKey("resource_version.pk"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    low: Mapped[datetime] = mapped_column(DateTime)
    high: Mapped[datetime] = mapped_column(DateTime)


class SearchString(Base):
    """String values of one version: normalized (case and accents folded) and exact."""

    __tablename__ = "search_string"
    __table_args__ = (
        Index(None, "resource_type", "param", "normalized"),
        Index(None, "version_pk", "param"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version_pk: Mapped[int] = mapped_column(ForeignKey("resource_version.pk"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    normalized: Mapped[str] = mapped_column(String(1024))
    exact: Mapped[str] = mapped_column(String(1024))


class IdentifierClaim(Base):
    """A business identifier owned by one resource: the database refuses a second owner."""

    __tablename__ = "identifier_claim"
    __table_args__ = (UniqueConstraint("resource_type", "system", "value"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    system: Mapped[str] = mapped_column(String(512))
    value: Mapped[str] = mapped_column(String(512))
    resource_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk"), index=True)


class InboundPayload(Base):
    """Every inbound request body, byte for byte as received, kept before we answer 2xx."""

    __tablename__ = "inbound_payload"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    channel: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(2048))
    content_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    resource_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resource_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ClinicSession(Base):
    """A clinic's massage-session record as last accepted, and what it produced."""

    __tablename__ = "clinic_session"
    __table_args__ = (
        UniqueConstraint("session_id"),
        Index(None, "patient_mrn", "pk"),
        #: the console's "documented today" (migration 0008)
        Index(None, "updated_at"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    patient_mrn: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    inbound_payload_pk: Mapped[int] = mapped_column(ForeignKey("inbound_payload.pk"))
    #: the accepted record, byte for byte as received
    record: Mapped[bytes] = mapped_column(LargeBinary)
    #: JSON list of {resourceType, id, versionId} this record produced
    resources: Mapped[str] = mapped_column(Text)
    #: JSON list of {code, message}
    flags: Mapped[str] = mapped_column(Text)


class Referral(Base):
    """A physician's referral as the clinic works it: the inbox row of one ServiceRequest.

    The FHIR resources (ServiceRequest, Task) are the record; this row is their projection for
    the inbox (filters, visit counts) and is written in the same transaction as they are.
    """

    __tablename__ = "referral"
    __table_args__ = (
        UniqueConstraint("service_request_id"),
        UniqueConstraint("placer_system", "placer_value"),
        Index(None, "status", "pk"),
        Index(None, "patient_id", "pk"),
        Index(None, "requester_npi", "pk"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_request_id: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    placer_system: Mapped[str] = mapped_column(String(512))
    placer_value: Mapped[str] = mapped_column(String(512))
    #: the Task's status: requested, accepted, rejected, in-progress, completed, ...
    status: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: how the patient was found: reference (named by the EHR), identifier (matched) or created
    patient_match: Mapped[str] = mapped_column(String(16))
    requester_reference: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    requester_npi: Mapped[str | None] = mapped_column(String(16), nullable=True)
    authored_on: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    visits_prescribed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: id of the Organization whose EHR sent it (NULL: loaded, polled or sent by the clinic)
    sender_organization: Mapped[str | None] = mapped_column(String(128), nullable=True)
    frequency: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expires_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    visits_used: Mapped[int] = mapped_column(Integer, default=0)
    #: JSON list of {severity, code, expression, diagnostics}: what intake reported
    warnings: Mapped[str] = mapped_column(Text)
    #: JSON list of re-sends that changed it: {"at", "by", "version", "changes": [...]}
    changes: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class OutboxEvent(Base):
    """Something a partner must hear about, written in the transaction of the change itself.

    The delivery worker consumes these rows (in ``pk`` order per patient); an event names the
    changed resource version and carries no PHI beyond ids.

    **One event per fact**: (resource type, id, version, event type) is unique, and writers
    insert-or-ignore (``store.outbox``), so two nodes writing the same change at once make one
    event. Rows written twice before that rule existed keep ``duplicate_of`` (the pk of the
    first one) and stay out of the unique index, with their delivery history.
    """

    __tablename__ = "outbox_event"
    __table_args__ = (
        Index(None, "patient_id", "pk"),
        Index(
            "uq_outbox_event_fact",
            "resource_type",
            "resource_id",
            "version_id",
            "event_type",
            unique=True,
            postgresql_where=text("duplicate_of IS NULL"),
            sqlite_where=text("duplicate_of IS NULL"),
        ),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: JSON object: event details (ids and references only)
    detail: Mapped[str] = mapped_column(Text)
    #: set on an event that repeated an earlier one (before migration 0009 made them unique)
    duplicate_of: Mapped[int | None] = mapped_column(BigId, nullable=True)


class Partner(Base):
    """A partner's FHIR server: a physician's EHR or a payer, what it receives and how we log in.

    Secrets are never stored here: ``auth`` names where they live (an environment variable or a
    file), and no API or log shows even that beyond the kind of auth.
    """

    __tablename__ = "partner"
    __table_args__ = (UniqueConstraint("key"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: short stable name used on the command line and in the API (``northside-ehr``)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    #: physician | payer
    kind: Mapped[str] = mapped_column(String(16))
    base_url: Mapped[str] = mapped_column(String(1024))
    #: JSON list of outbox event types the partner receives
    events: Mapped[str] = mapped_column(Text)
    #: JSON list of {system, value}: the requester's NPIs (physicians) or the payer id (payers)
    identifiers: Mapped[str] = mapped_column(Text)
    #: none | bearer | smart
    auth_kind: Mapped[str] = mapped_column(String(16))
    #: JSON object: where the secret is (``token_env``/``key_file``/``key_env``), client id,
    #: token URL, algorithm, scopes; never the secret itself
    auth: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: the most entries the partner takes in one Bundle (None: any number); a larger delivery
    #: is sent as several ordered Bundles (``mapping.delivery_split``)
    max_bundle_entries: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: transaction | batch
    bundle_type: Mapped[str] = mapped_column(
        String(16), default="transaction", server_default="transaction"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class DeliveryStatus(StrEnum):
    """Where a delivery stands (stored as its value; equal to the plain string)."""

    #: waiting for its first or next attempt (or leased by a worker right now)
    PENDING = "pending"
    #: the partner accepted it (every part, when it was split)
    DELIVERED = "delivered"
    #: a dead letter: refused, or given up; only an operator's retry sends it again
    DEAD = "dead"


class Delivery(Base):
    """One outbox event on its way to one partner: the unit the worker sends, retries and logs."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("partner_pk", "outbox_pk"),
        Index(None, "status", "next_attempt_at"),
        #: "is there an older pending row of this patient for this partner?" (the head check)
        Index(None, "partner_pk", "patient_id", "status", "pk"),
        #: a claim reads each partner's due rows in this order and stops early
        Index(None, "partner_pk", "status", "next_attempt_at", "pk"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    partner_pk: Mapped[int] = mapped_column(ForeignKey("partner.pk"))
    outbox_pk: Mapped[int] = mapped_column(ForeignKey("outbox_event.pk"))
    event_type: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: a DeliveryStatus value: pending | delivered | dead
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    #: a worker holds the row until then; after it, another worker may take it again
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: the first failed attempt since the row was created or requeued: the give-up clock
    first_failed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the partner's OperationOutcome (JSON) of the last failed attempt
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the Bundle sent (JSON bytes), fixed at the first attempt so a retry sends the same
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class DeliveryAttempt(Base):
    """One attempt to send a delivery: kept for good, so a later success does not erase a
    failure (the ``delivery`` row holds only the latest state)."""

    __tablename__ = "delivery_attempt"
    __table_args__ = (Index(None, "delivery_pk", "pk"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_pk: Mapped[int] = mapped_column(ForeignKey("delivery.pk"))
    #: when the attempt started (naive UTC)
    attempted_at: Mapped[datetime] = mapped_column(DateTime)
    #: how long the partner took to answer (NULL: not measured, e.g. rows from before 0009)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: delivered | retry | dead: what the worker made of it
    result: Mapped[str] = mapped_column(String(16))
    #: the partner's HTTP status (NULL without an answer)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: a short PHI-free reason (status codes, exception type names)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the partner's OperationOutcome (JSON text, at most 64 KB) on a failure
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the worker that made the attempt
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)


class OutboxCursor(Base):
    """How far a consumer (the router) has read the outbox."""

    __tablename__ = "outbox_cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_pk: Mapped[int] = mapped_column(BigId)


class ApiClient(Base):
    """A registered system client (SMART Backend Services): who it is and what it may ask for.

    Only public keys are kept (a JWKS, or the URL it is published at); the client signs its own
    assertions with its private key, which the bridge never sees.
    """

    __tablename__ = "api_client"
    __table_args__ = (UniqueConstraint("client_id"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    #: ehr | payer | clinic | admin
    role: Mapped[str] = mapped_column(String(16))
    #: ``Organization/<id>`` the client acts for (ehr and payer clients), else NULL
    organization: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: space-separated scopes the client may be granted (v1 or v2 syntax)
    scopes: Mapped[str] = mapped_column(Text)
    #: JSON Web Key Set (public keys), or NULL when ``jwks_url`` is used
    jwks: Mapped[str | None] = mapped_column(Text, nullable=True)
    jwks_url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    #: space-separated NPIs of the practitioners an ehr client speaks for (write ownership)
    npis: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class AssertionJti(Base):
    """A client assertion's ``jti`` seen at the token endpoint, kept until the assertion expires."""

    __tablename__ = "assertion_jti"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class SigningKey(Base):
    """The secret the bridge signs its access tokens with, shared by every process of one store."""

    __tablename__ = "signing_key"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class StaffUser(Base):
    """A person who logs in to the clinic console: front desk, therapist or clinic admin.

    Only an argon2 hash of the password is kept. ``session_epoch`` is written into every
    console session cookie: a password reset or a disable bumps it, which ends every session
    the user had open. Repeated failed logins lock the account until ``locked_until``.
    """

    __tablename__ = "staff_user"
    __table_args__ = (UniqueConstraint("username"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    #: front-desk | therapist | clinic-admin
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    session_epoch: Mapped[int] = mapped_column(Integer, default=1)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ExportJob(Base):
    """One Bulk Data ``$export`` request: who asked, what, and how far the worker has got.

    The worker claims a queued (or abandoned) job with a lease like a delivery; its files are
    ``export_file`` rows, written only when the job completes, so a manifest never lists a
    partial file.
    """

    __tablename__ = "export_job"
    __table_args__ = (Index(None, "status", "lease_until"), Index(None, "expires_at"))

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: the id in the status URL (random, not guessable)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: the client that kicked it off: the only one that may poll, cancel and download
    client_id: Mapped[str] = mapped_column(String(128))
    #: JSON: the caller's role, organization and granted scopes (its access at kick-off)
    principal: Mapped[str] = mapped_column(Text)
    #: the kick-off request URL, as the manifest's ``request``
    request_url: Mapped[str] = mapped_column(String(4096))
    #: JSON: level, group, types, since, type filters
    params: Mapped[str] = mapped_column(Text)
    #: queued | running | completed | failed | cancelled
    status: Mapped[str] = mapped_column(String(16))
    #: a short progress text for X-Progress
    progress: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: the store's write sequence the export reads as of (fixed at the first claim)
    snapshot: Mapped[int | None] = mapped_column(BigId, nullable=True)
    transaction_time: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: a worker holds the job until then (renewed while it runs); after it another may take it
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: JSON OperationOutcome of a failed job
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: after it the status URL and files answer 404 and the worker removes them
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ExportFile(Base):
    """One NDJSON file of a completed export."""

    __tablename__ = "export_file"
    __table_args__ = (UniqueConstraint("job_pk", "name"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("export_job.pk", ondelete="CASCADE"))
    #: output | error
    kind: Mapped[str] = mapped_column(String(8))
    resource_type: Mapped[str] = mapped_column(String(64))
    #: file name in the job's folder (``Patient-1.ndjson``)
    name: Mapped[str] = mapped_column(String(128))
    count: Mapped[int] = mapped_column(Integer)
    #: JSON list of the patient ids whose records the file holds (audited on download)
    patients: Mapped[str] = mapped_column(Text)
