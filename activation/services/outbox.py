"""Delivery of outbox rows to the core: claim under a lease, call, record, back off."""

import logging
import random
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F
from django.utils import timezone

from portal.breaker import core_breaker

from ..core.client import ActivationResult, CoreClient, Outcome
from ..models import ActorType, CoreRequest, CoreSubmissionSwitch, CreditLine, FailureReason
from ..selectors import core_requests_due
from ..timeline import append_case_event
from ..transitions import transition
from ._common import S, core_client, enqueue_delivery, lock_case
from .core_updates import apply_line_status
from .emergency import core_submissions_paused

logger = logging.getLogger(__name__)


def due_core_request_ids(*, limit: int = 200) -> list[int]:
    """Pick outbox rows that are due, skipping rows another process is claiming right now."""
    if core_submissions_paused():
        return []
    with transaction.atomic():
        return list(
            CoreRequest.objects.select_for_update(skip_locked=True)
            .filter(core_requests_due(timezone.now()))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )


def _claim_core_request(request_id: int) -> CoreRequest | None:
    """Mark a due row in flight under a lease; None if it is not due, someone else has it, or
    submissions are paused.

    One UPDATE, whose conditions PostgreSQL checks again against the row as a concurrent claim
    left it (after waiting for that claim's lock), so two workers never both claim a row.
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.ACTIVATION_DELIVERY_LEASE_SECONDS)
    claimed = (
        CoreRequest.objects.filter(core_requests_due(now), pk=request_id)
        .exclude(Exists(CoreSubmissionSwitch.objects.filter(pk=1, paused=True)))
        .update(
            status=CoreRequest.Status.IN_FLIGHT,
            attempts=F("attempts") + 1,
            lease_expires_at=now + lease,
        )
    )
    return CoreRequest.objects.get(pk=request_id) if claimed else None


def deliver_core_request(*, request_id: int, client: CoreClient | None = None) -> bool:
    """Send one outbox row to the core and record the answer; False if it was not sent now.

    While submissions are paused or the circuit breaker is open the row is left as it is, due,
    without using up an attempt: the sweeper brings it back when sending is possible again.
    """
    breaker = core_breaker()
    if not breaker.allow():
        return False
    request = _claim_core_request(request_id)
    if request is None:
        breaker.release_trial()
        return False
    # The HTTP call happens outside any transaction: no lock is held while the core thinks.
    with core_client(client) as core:
        result = core.activate(
            payload=request.payload, idempotency_key=str(request.idempotency_key)
        )
    if result.outcome == Outcome.UNAVAILABLE:
        breaker.record_failure()
    elif result.outcome != Outcome.BUSY:  # a busy core is alive; its Retry-After paces us
        breaker.record_success()
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
    case = lock_case(request.case_id)
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
            enqueue_delivery(request.pk, countdown=delay)
            return
        request.status = CoreRequest.Status.FAILED
        request.completed_at = now
        request.save(update_fields=[*fields, "completed_at"])
        if case.state == S.SUBMITTING:
            transition(
                case,
                to=S.NEEDS_REVIEW,
                actor_type=ActorType.SYSTEM,
                reason=FailureReason.CORE_UNAVAILABLE,
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
        apply_line_status(
            case, status=CreditLine.Status.ACTIVE, version=result.version, body=result.body
        )
    elif result.outcome == Outcome.PENDING:
        apply_line_status(
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
