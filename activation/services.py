"""Every write that changes an activation's business state: one function per use case.

Each runs in one transaction, locks the case it changes, writes the timeline event in the same
transaction, and schedules side effects (tasks, SMS) with ``transaction.on_commit``.
"""

import logging
import random
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.masking import mask_phone_number
from accounts.models import User
from portal.errors import DomainError
from verification.services import CheckResult, IssuedCode, check_sms_code, issue_sms_code

from .core.client import (
    ActivationResult,
    CoreClient,
    CoreUnavailable,
    CreditLineStatus,
    Outcome,
)
from .models import (
    OPEN_STATES,
    ActivationCase,
    ActorType,
    CaseState,
    CoreCallback,
    CoreRequest,
    CreditLine,
    FailureReason,
)
from .timeline import SYSTEM_CONTEXT, RequestContext, append_case_event
from .transitions import TransitionNotAllowed, transition

logger = logging.getLogger(__name__)

S = CaseState

# States in which a submitted code has already done its work: a repeat is answered as success.
ALREADY_VERIFIED_STATES = frozenset({S.SUBMITTING, S.AWAITING_CONFIRMATION, S.ACTIVATED})


class CaseNotFound(DomainError):
    code = "case_not_found"
    http_status = 404


def _lock_case(case_id: int, *, customer: User | None = None) -> ActivationCase:
    # The row lock serialises every change to one case (and its event chain) across processes.
    cases = ActivationCase.objects.select_for_update().select_related("credit_line")
    if customer is not None:
        cases = cases.filter(credit_line__customer=customer)
    try:
        return cases.get(pk=case_id)
    except ActivationCase.DoesNotExist as error:
        raise CaseNotFound() from error


def _core_client(client: CoreClient | None) -> AbstractContextManager[CoreClient]:
    """Use the given client as is, or open (and later close) one from the settings."""
    return nullcontext(client) if client is not None else CoreClient.from_settings()


def _enqueue_delivery(request_id: int, *, countdown: float = 0) -> None:
    from .tasks import deliver_core_request  # the tasks module imports this one

    transaction.on_commit(
        lambda: deliver_core_request.apply_async((request_id,), countdown=countdown)
    )


# --- Customer: retry with a verification code ---------------------------------------------------


@transaction.atomic
def send_activation_code(
    *, case_id: int, customer: User, context: RequestContext = SYSTEM_CONTEXT
) -> IssuedCode:
    """Text the customer a code for this case, reopening a failed case for a retry."""
    case = _lock_case(case_id, customer=customer)
    if case.state == S.FAILED:
        transition(
            case,
            to=S.PENDING_VERIFICATION,
            actor_type=ActorType.CUSTOMER,
            actor=customer,
            data={"trigger": "customer_retry"},
            context=context,
        )
        case.retry_count += 1
        case.save(update_fields=["retry_count"])
    elif case.state != S.PENDING_VERIFICATION:
        raise TransitionNotAllowed(current=case.state, target=S.PENDING_VERIFICATION)
    issued = issue_sms_code(user=customer)
    append_case_event(
        case,
        kind="verification.sent",
        actor_type=ActorType.CUSTOMER,
        actor=customer,
        data={"channel": "sms", "destination": mask_phone_number(issued.destination)},
        context=context,
    )
    return issued


def _activation_payload(case: ActivationCase, *, verified_method: str) -> dict[str, Any]:
    line = case.credit_line
    return {
        "credit_line_ref": line.reference,
        "customer_ref": line.customer.customer_reference or f"U-{line.customer_id}",
        "requested_by": "customer",
        "verification": {
            "method": verified_method,
            "verified_at": timezone.now().isoformat().replace("+00:00", "Z"),
        },
    }


@transaction.atomic
def verify_and_submit(
    *, case_id: int, customer: User, code: str, context: RequestContext = SYSTEM_CONTEXT
) -> CheckResult:
    """Check the customer's code; if right, queue the activation for the core.

    A code submitted again after it already worked (a double tap, a browser retry) is answered
    as the success it was, not as "code invalid".
    """
    case = _lock_case(case_id, customer=customer)
    if case.state in ALREADY_VERIFIED_STATES:
        return CheckResult.OK
    if case.state != S.PENDING_VERIFICATION:
        raise TransitionNotAllowed(current=case.state, target=S.SUBMITTING)

    result = check_sms_code(user=customer, code=code)
    actor = {"actor_type": ActorType.CUSTOMER, "actor": customer, "context": context}
    if result != CheckResult.OK:
        append_case_event(case, kind="verification.failed", data={"result": result}, **actor)
        if result == CheckResult.EXPIRED:
            transition(case, to=S.FAILED, reason=FailureReason.CODE_EXPIRED, **actor)
        elif result == CheckResult.BURNED:
            transition(case, to=S.FAILED, reason=FailureReason.TOO_MANY_ATTEMPTS, **actor)
        return result

    append_case_event(case, kind="verification.succeeded", data={"channel": "sms"}, **actor)
    transition(case, to=S.SUBMITTING, **actor)
    request = CoreRequest.objects.create(
        case=case, payload=_activation_payload(case, verified_method="sms")
    )
    _enqueue_delivery(request.pk)
    return result


# --- Delivery to the core (the outbox) ----------------------------------------------------------


def _due_requests(now) -> Q:
    pending_and_due = Q(status=CoreRequest.Status.PENDING, next_attempt_at__lte=now)
    # A delivery whose lease ran out died mid-flight (worker killed, broker lost the message).
    abandoned = Q(status=CoreRequest.Status.IN_FLIGHT, lease_expires_at__lte=now)
    return pending_and_due | abandoned


def due_core_request_ids(*, limit: int = 200) -> list[int]:
    """Pick outbox rows that are due, skipping rows another process is claiming right now."""
    with transaction.atomic():
        return list(
            CoreRequest.objects.select_for_update(skip_locked=True)
            .filter(_due_requests(timezone.now()))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )


def _claim_core_request(request_id: int) -> CoreRequest | None:
    """Mark a due row in flight under a lease; None if it is not due or someone else has it."""
    with transaction.atomic():
        now = timezone.now()
        request = (
            CoreRequest.objects.select_for_update(skip_locked=True)
            .filter(_due_requests(now), pk=request_id)
            .first()
        )
        if request is None:
            return None
        request.status = CoreRequest.Status.IN_FLIGHT
        request.attempts += 1
        request.lease_expires_at = now + timedelta(
            seconds=settings.ACTIVATION_DELIVERY_LEASE_SECONDS
        )
        request.save(update_fields=["status", "attempts", "lease_expires_at"])
        return request


def deliver_core_request(*, request_id: int, client: CoreClient | None = None) -> bool:
    """Send one outbox row to the core and record the answer; False if it was not ours to send."""
    request = _claim_core_request(request_id)
    if request is None:
        return False
    # The HTTP call happens outside any transaction: no lock is held while the core thinks.
    with _core_client(client) as core:
        result = core.activate(
            payload=request.payload, idempotency_key=str(request.idempotency_key)
        )
    record_core_result(request_id=request.pk, attempt=request.attempts, result=result)
    return True


def retry_delay_seconds(attempt: int, *, retry_after: float | None = None) -> float:
    """Exponential back-off with jitter, capped; never sooner than the core's Retry-After."""
    ceiling = min(
        settings.ACTIVATION_RETRY_MAX_SECONDS,
        settings.ACTIVATION_RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0),
    )
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


@transaction.atomic
def record_core_result(*, request_id: int, attempt: int, result: ActivationResult) -> None:
    """Apply the core's answer to one delivery attempt."""
    request = CoreRequest.objects.select_for_update().get(pk=request_id)
    if request.status != CoreRequest.Status.IN_FLIGHT or request.attempts != attempt:
        # Our lease ran out and another delivery took over; its answer is the one that counts.
        logger.info("Ignoring a late answer for core request %s attempt %s", request_id, attempt)
        return
    case = _lock_case(request.case_id)
    now = timezone.now()
    append_case_event(
        case,
        kind="core.response",
        actor_type=ActorType.CORE,
        data={
            "attempt": attempt,
            "idempotency_key": str(request.idempotency_key),
            "status_code": result.status_code,
            "outcome": result.outcome,
            "error": result.error,
            "body": result.body,
        },
    )
    request.last_status_code = result.status_code
    request.last_error = result.error
    request.lease_expires_at = None
    fields = ["status", "last_status_code", "last_error", "lease_expires_at"]

    if result.outcome in (Outcome.BUSY, Outcome.UNAVAILABLE):
        if attempt < settings.ACTIVATION_MAX_SUBMIT_ATTEMPTS:
            delay = retry_delay_seconds(attempt, retry_after=result.retry_after_seconds)
            request.status = CoreRequest.Status.PENDING
            request.next_attempt_at = now + timedelta(seconds=delay)
            request.save(update_fields=[*fields, "next_attempt_at"])
            _enqueue_delivery(request.pk, countdown=delay)
            return
        request.status = CoreRequest.Status.FAILED
        request.completed_at = now
        request.save(update_fields=[*fields, "completed_at"])
        reason = (
            FailureReason.CORE_BUSY
            if result.outcome == Outcome.BUSY
            else FailureReason.CORE_UNAVAILABLE
        )
        if case.state == S.SUBMITTING:
            transition(
                case,
                to=S.NEEDS_REVIEW,
                actor_type=ActorType.SYSTEM,
                reason=reason,
                detail=f"gave up after {attempt} attempts: {result.error}"[:200],
            )
        return

    request.status = (
        CoreRequest.Status.SUCCEEDED
        if result.outcome in (Outcome.ACTIVATED, Outcome.PENDING)
        else CoreRequest.Status.FAILED
    )
    request.completed_at = now
    request.save(update_fields=[*fields, "completed_at"])

    if result.outcome == Outcome.ACTIVATED:
        _apply_line_status(
            case, status=CreditLine.Status.ACTIVE, version=result.version, body=result.body
        )
    elif result.outcome == Outcome.PENDING:
        _apply_line_status(
            case, status=CreditLine.Status.PENDING, version=result.version, body=result.body
        )
        if case.state == S.SUBMITTING:
            transition(case, to=S.AWAITING_CONFIRMATION, actor_type=ActorType.CORE)
    elif case.state == S.SUBMITTING:  # REJECTED or KEY_REUSED: a person must look at it
        transition(
            case,
            to=S.NEEDS_REVIEW,
            actor_type=ActorType.CORE,
            reason=FailureReason.CORE_REJECTED,
            detail=result.reason[:200],
        )


# --- What the core reports: callbacks and polls -------------------------------------------------


def _apply_line_status(
    case: ActivationCase,
    *,
    status: str,
    version: int | None,
    body: dict[str, Any],
    failure_reason: str = "",
) -> bool:
    """Mirror the core's word about a line onto it and its case; False if it was old news."""
    line = CreditLine.objects.select_for_update().get(pk=case.credit_line_id)
    if version is not None and version <= line.core_version:
        return False
    line.core_version = version if version is not None else line.core_version
    line.core_activation_id = str(body.get("activation_id") or line.core_activation_id)
    if status in CreditLine.Status.values:
        line.status = status
    line.save(update_fields=["core_version", "core_activation_id", "status"])

    if status == CreditLine.Status.ACTIVE and case.state in OPEN_STATES:
        transition(case, to=S.ACTIVATED, actor_type=ActorType.CORE, data={"version": version})
    elif failure_reason and case.state in (S.SUBMITTING, S.AWAITING_CONFIRMATION):
        transition(
            case,
            to=S.NEEDS_REVIEW,
            actor_type=ActorType.CORE,
            reason=FailureReason.CORE_REJECTED,
            detail=failure_reason[:200],
        )
    return True


class UnknownCreditLine(DomainError):
    code = "unknown_credit_line"
    http_status = 422


@transaction.atomic
def record_core_callback(*, webhook_id: str, payload: dict[str, Any]) -> bool:
    """Apply a verified callback from the core; False if it was a redelivery already applied."""
    data = payload.get("data") or {}
    event_type = str(payload.get("type", ""))
    reference = str(data.get("credit_line_ref", ""))
    line = CreditLine.objects.filter(reference=reference).first()
    if line is None:
        raise UnknownCreditLine(f"No credit line {reference!r}.", credit_line_ref=reference)
    try:
        # Delivery is at least once: the unique webhook id makes a redelivery a no-op.
        with transaction.atomic():
            CoreCallback.objects.create(
                webhook_id=webhook_id, event_type=event_type, payload=payload
            )
    except IntegrityError:
        return False

    case = line.cases.order_by("-opened_at", "-pk").first()
    if case is None:
        return True
    case = _lock_case(case.pk)
    version = data.get("version") if isinstance(data.get("version"), int) else None
    if event_type == "activation.succeeded":
        status, failure = CreditLine.Status.ACTIVE, ""
    else:
        status, failure = str(data.get("status") or ""), str(data.get("reason") or "failed")
    append_case_event(
        case,
        kind="core.callback",
        actor_type=ActorType.CORE,
        data={"webhook_id": webhook_id, "type": event_type, "version": version, "data": data},
    )
    _apply_line_status(case, status=status, version=version, body=data, failure_reason=failure)
    return True


def reconcile_activations(*, client: CoreClient | None = None) -> dict[str, int]:
    """Ask the core about cases waiting too long for a callback; escalate those past the SLA."""
    now = timezone.now()
    poll_before = now - timedelta(seconds=settings.ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS)
    waiting = list(
        ActivationCase.objects.filter(
            state=S.AWAITING_CONFIRMATION, state_changed_at__lte=poll_before
        ).values_list("pk", "credit_line__reference")
    )
    counts = {"polled": 0, "activated": 0, "escalated": 0, "unreachable": 0}
    with _core_client(client) as core:
        for case_id, reference in waiting:
            try:
                line_status = core.get_credit_line(reference)
            except CoreUnavailable:
                counts["unreachable"] += 1
                continue
            counts["polled"] += 1
            if line_status is not None and _record_poll(case_id, line_status):
                counts["activated"] += 1
    counts["escalated"] = escalate_overdue_cases()
    return counts


@transaction.atomic
def _record_poll(case_id: int, line_status: CreditLineStatus) -> bool:
    case = _lock_case(case_id)
    if case.state != S.AWAITING_CONFIRMATION:
        return False  # something else (a callback, another poller) settled it meanwhile
    append_case_event(
        case,
        kind="core.polled",
        actor_type=ActorType.SYSTEM,
        data={"status": line_status.status, "version": line_status.version},
    )
    _apply_line_status(
        case,
        status=line_status.status,
        version=line_status.version,
        body={"activation_id": line_status.activation_id},
    )
    return case.state == S.ACTIVATED


def escalate_overdue_cases() -> int:
    """Send cases the core has not settled within the SLA to staff with ``sync_timeout``."""
    overdue = ActivationCase.objects.filter(
        state__in=[S.SUBMITTING, S.AWAITING_CONFIRMATION], sla_due_at__lte=timezone.now()
    ).values_list("pk", flat=True)
    escalated = 0
    for case_id in list(overdue):
        with transaction.atomic():
            case = _lock_case(case_id)
            if case.state not in (S.SUBMITTING, S.AWAITING_CONFIRMATION):
                continue
            if case.sla_due_at is None or case.sla_due_at > timezone.now():
                continue
            transition(
                case,
                to=S.NEEDS_REVIEW,
                actor_type=ActorType.SYSTEM,
                reason=FailureReason.SYNC_TIMEOUT,
            )
            escalated += 1
    return escalated


# --- Opening cases ------------------------------------------------------------------------------


@transaction.atomic
def open_case(
    *,
    credit_line: CreditLine,
    reason: FailureReason,
    detail: str = "",
    actor_type: ActorType = ActorType.SYSTEM,
) -> ActivationCase:
    """Open a case for a line whose activation failed; at most one case per line is open."""
    case = ActivationCase.objects.create(
        credit_line=credit_line, state=S.FAILED, failure_reason=reason, failure_detail=detail
    )
    append_case_event(
        case,
        kind="case.opened",
        actor_type=actor_type,
        state_after=S.FAILED,
        data={"reason": reason, "detail": detail},
    )
    return case
