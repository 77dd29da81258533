"""Single writes: create (optionally conditional) and update (optionally version-aware).

A ServiceRequest or fulfil Task is taken in as a referral when an intake policy is given; what
the caller may write is checked against its ``WriteAccess`` inside the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fhir_bridge.fhir.bundle_plan import conditional_query, relocated
from fhir_bridge.fhir.outcome import FhirError, Issue, error
from fhir_bridge.fhir.transaction import identity_claim, parse_query
from fhir_bridge.services.access_policy import WriteAccess
from fhir_bridge.services.fhir_write.common import (
    Inbound,
    WriteResult,
    check_valid,
    claimable,
    find_matches,
    for_create,
    keep,
    multiple,
    not_a_referral_task,
    resource_body,
    with_retry,
)
from fhir_bridge.services.referral_fetch import prefetch
from fhir_bridge.services.referral_intake import (
    IntakePolicy,
    ReferralIntake,
    focus_reference,
    is_fulfil_task,
    placer_claim,
)
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.errors import DuplicateIdentifier, ResourceNotFound, VersionConflict
from fhir_bridge.store.repository import ResourceStore, StoredResource


def create(
    runtime: Runtime,
    resource_type: str,
    inbound: Inbound,
    *,
    if_none_exist: str | None,
    policy: IntakePolicy | None = None,
    fetched: Mapping[str, dict[str, Any]] | None = None,
    access: WriteAccess | None = None,
) -> WriteResult:
    """POST [base]/[type] (optionally conditional); 201 created, or 200 with the one match.

    With an intake ``policy``, a ServiceRequest or fulfil Task is taken in as a referral.
    ``fetched`` (absolute URL -> resource) is what the caller already read from the physician's
    server (pull mode); when given, nothing is fetched here. ``access``: what the caller may
    write (the clinic's own callers when None); a refusal rolls the write back.
    """
    resource = resource_body(inbound.body, resource_type)
    query = None
    if if_none_exist is not None:
        query = conditional_query(resource_type, parse_query(if_none_exist), "If-None-Exist")
    check_valid(resource, runtime.settings.fhir_base_url)
    claim = claimable(identity_claim(query)) if query else None
    if fetched is None:
        fetched = prefetch(runtime, [(resource_type, resource)]) if policy else {}

    def work(store: ResourceStore) -> WriteResult:
        matches = find_matches(store.session, query) if query else []
        if len(matches) > 1:
            raise multiple("If-None-Exist")
        keep(store, inbound)
        if matches:
            if access is not None:
                access.check_on_file(store, matches[0].resource, "If-None-Exist")
            return WriteResult(matches[0], False)
        result = _create_one(store, resource_type, resource, claim, policy, fetched, access)
        if access is not None:
            access.check_written(store, result.stored.resource, resource_type)
        return result

    return with_retry(runtime, work, resource_type)


def _create_one(
    store: ResourceStore,
    resource_type: str,
    resource: dict[str, Any],
    claim: tuple[str, str] | None,
    policy: IntakePolicy | None,
    fetched: Mapping[str, dict[str, Any]] | None,
    access: WriteAccess | None,
) -> WriteResult:
    """The write of a direct create: a referral taken in, or a plain resource."""
    if policy is not None and resource_type == "ServiceRequest":
        intake = ReferralIntake(store, policy, fetched=fetched)
        existing = intake.existing(resource)
        if existing is not None and access is not None:
            access.check_on_file(store, existing.resource, resource_type)
        previous = existing.resource if existing is not None else None
        return _receive_service_request(intake, resource, previous=previous)
    if policy is not None and resource_type == "Task" and not is_fulfil_task(resource):
        raise not_a_referral_task()
    if policy is not None and is_fulfil_task(resource):
        return receive_task(ReferralIntake(store, policy, fetched=fetched), resource, claim)
    try:
        stored = store.create(for_create(resource), claim_identifiers=[claim] if claim else [])
    except DuplicateIdentifier as exc:
        if access is not None:
            access.check_on_file(store, exc.existing.resource, resource_type)
        return WriteResult(exc.existing, False)
    return WriteResult(stored, True)


def _receive_service_request(
    intake: ReferralIntake,
    resource: dict[str, Any],
    root: str = "ServiceRequest",
    previous: dict[str, Any] | None = None,
) -> WriteResult:
    resource = intake.linked(resource)
    warnings = intake.check(resource, root)
    stored, created = intake.store_service_request(resource)
    intake.register(stored, warnings=warnings, previous=previous)
    return WriteResult(stored, created, tuple(warnings))


def receive_task(
    intake: ReferralIntake,
    resource: dict[str, Any],
    claim: tuple[str, str] | None,
    root: str = "Task",
) -> WriteResult:
    """A fulfil Task: its focus must be a referral on file or fetched from a physician server."""
    focus = focus_reference(resource)
    warnings: list[Issue] = []
    if focus is not None and focus in intake.fetched:
        sr = intake.fetched[focus]
        warnings = intake.check(sr, f"{root}.focus.resolve()")
        intake.store_service_request(sr)
    sr_stored = intake.service_request_for(focus) if focus else None
    if sr_stored is None:
        raise FhirError(
            422,
            error(
                "not-found",
                "The Task's focus must be a ServiceRequest on file, in the same Bundle, or on a "
                "registered physician server",
                f"{root}.focus",
            ),
        )
    tracked = intake.tracker(sr_stored)
    if not intake.supersedable(tracked):
        assert tracked is not None
        return WriteResult(tracked, False, tuple(warnings))  # the first fulfil Task tracks
    claims = [claim] if claim else []
    try:
        stored = intake.store.create(for_create(resource), claim_identifiers=claims)
    except DuplicateIdentifier as exc:
        return WriteResult(exc.existing, False, tuple(warnings))
    intake.track(sr_stored, stored, warnings)
    return WriteResult(stored, True, tuple(warnings))


def update(
    runtime: Runtime,
    resource_type: str,
    resource_id: str,
    inbound: Inbound,
    *,
    if_match: int | None,
    policy: IntakePolicy | None = None,
    access: WriteAccess | None = None,
) -> WriteResult:
    """PUT [base]/[type]/[id]: 200 updated, 201 created (update as create), 412 when stale.

    With an intake ``policy``, a ServiceRequest is checked and kept as a referral, and a Task
    that tracks a referral updates the inbox's status.
    """
    resource = resource_body(inbound.body, resource_type)
    if resource_type == "Task" and policy is not None and not is_fulfil_task(resource):
        raise not_a_referral_task()
    if resource.get("id") != resource_id:
        raise FhirError(
            400,
            error("invalid", "The resource id must equal the id in the URL", f"{resource_type}.id"),
        )
    check_valid(resource, runtime.settings.fhir_base_url)

    def work(store: ResourceStore) -> WriteResult:
        keep(store, inbound)
        on_file = store.get(resource_type, resource_id)
        if access is not None and on_file is not None:
            access.check_on_file(store, on_file.resource, resource_type)
        intake = ReferralIntake(store, policy) if policy is not None else None
        body = intake.linked(resource) if intake and resource_type == "ServiceRequest" else resource
        warnings = intake.check(body) if intake and resource_type == "ServiceRequest" else []
        claim = placer_claim(body) if intake and resource_type == "ServiceRequest" else None
        stored, created = put(store, body, if_match, "If-Match", [claim] if claim else [])
        if intake is not None and resource_type == "ServiceRequest":
            previous = on_file.resource if on_file is not None else None
            intake.register(stored, warnings=warnings, previous=previous)
        elif intake is not None and resource_type == "Task":
            intake.task_changed(stored)
        if access is not None:
            access.check_written(store, stored.resource, resource_type)
        return WriteResult(stored, created, tuple(warnings))

    return with_retry(runtime, work, resource_type)


def put(
    store: ResourceStore,
    resource: dict[str, Any],
    if_match: int | None,
    expression: str,
    claims: Sequence[tuple[str, str]] = (),
) -> tuple[StoredResource, bool]:
    try:
        return store.update(resource, expected_version=if_match, claim_identifiers=claims)
    except VersionConflict as exc:
        raise relocated(exc, expression) from None
    except ResourceNotFound:
        raise FhirError(
            412,
            error(
                "conflict", "If-Match names a version of a resource that does not exist", expression
            ),
        ) from None
