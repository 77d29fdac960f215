"""What the core reports about a line, by callback or by poll, and escalation of silence."""

import time
from contextlib import closing
from datetime import datetime
from itertools import islice
from typing import Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from portal.breaker import core_breaker
from portal.db import stream

from ..core.client import CoreClient, CoreUnavailable, CreditLineStatus
from ..errors import UnknownCreditLine
from ..models import (
    OPEN_STATES,
    ActivationCase,
    ActorType,
    CoreCallback,
    CoreRequest,
    CreditLine,
    FailureReason,
)
from ..selectors import awaiting_confirmation_past_poll_time
from ..timeline import append_case_event
from ..transitions import transition
from ._common import S, core_client, lock_case


def apply_line_status(
    case: ActivationCase,
    *,
    status: str,
    version: int | None,
    body: dict[str, Any],
    failure_reason: str = "",
    event_data: dict[str, Any] | None = None,
) -> bool:
    """Mirror the core's word about a line onto it and its case; False if it was old news.

    ``case`` comes from ``lock_case`` in this transaction, whose ``SELECT … FOR UPDATE`` locked
    the case's credit line with it (as read after the lock was granted).
    """
    line = case.credit_line
    if version is not None and version <= line.core_version:
        return False
    line.core_version = version if version is not None else line.core_version
    line.core_activation_id = str(body.get("activation_id") or line.core_activation_id)
    if status in CreditLine.Status.values:
        line.status = status
    line.save(update_fields=["core_version", "core_activation_id", "status"])

    if status == CreditLine.Status.ACTIVE and case.state in OPEN_STATES:
        transition(
            case,
            to=S.ACTIVATED,
            actor_type=ActorType.CORE,
            data={"version": version, **(event_data or {})},
        )
    elif failure_reason and case.state in (S.SUBMITTING, S.AWAITING_CONFIRMATION):
        transition(
            case,
            to=S.NEEDS_REVIEW,
            actor_type=ActorType.CORE,
            reason=FailureReason.CORE_REJECTED,
            detail=failure_reason[:200],
        )
    return True


# The callback types the contract defines (core-credit-api.md). Any other type is recorded and
# acknowledged but never applied: a newer core's event must not read as a failed activation.
CORE_CALLBACK_TYPES = frozenset({"activation.succeeded", "activation.failed"})
CallbackOutcome = Literal["applied", "duplicate", "ignored"]


@transaction.atomic
def record_core_callback(*, webhook_id: str, payload: dict[str, Any]) -> CallbackOutcome:
    """Record a verified callback from the core and apply it if its type is one we know.

    ``payload`` has been validated (lengths, integers, no NUL or NaN) by the API.
    """
    data = payload.get("data") or {}
    event_type = str(payload.get("type", ""))
    known = event_type in CORE_CALLBACK_TYPES
    reference = str(data.get("credit_line_ref", ""))
    line = CreditLine.objects.filter(reference=reference).first()
    if line is None and known:
        raise UnknownCreditLine(f"No credit line {reference!r}.", credit_line_ref=reference)
    try:
        # Delivery is at least once: the unique webhook id makes a redelivery a no-op.
        with transaction.atomic():
            CoreCallback.objects.create(
                webhook_id=webhook_id, event_type=event_type, payload=payload
            )
    except IntegrityError:
        return "duplicate"

    case = line.cases.order_by("-opened_at", "-pk").first() if line else None
    if case is None:
        return "applied" if known else "ignored"
    case = lock_case(case.pk)
    if not known:
        unknown = {"webhook_id": webhook_id, "type": event_type, "data": data}
        append_case_event(
            case, kind="core.callback_ignored", actor_type=ActorType.CORE, data=unknown
        )
        return "ignored"
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
    apply_line_status(case, status=status, version=version, body=data, failure_reason=failure)
    return "applied"


# A case handed to staff for one of these reasons may have gone through at the core after all (a
# delivery that timed out may have arrived; a confirmation may come after the SLA), so the core
# is still asked about it. Other reasons (too many attempts, a refusal, a risk hold) are settled.
REVIEW_REASONS_STILL_POLLED = (FailureReason.SYNC_TIMEOUT, FailureReason.CORE_UNAVAILABLE)


def reconcile_activations(*, client: CoreClient | None = None) -> dict[str, int]:
    """Ask the core about cases it may have settled unseen; escalate those past the SLA.

    Asked about: cases waiting too long for a callback, and cases handed to staff whose request
    may have reached the core (at most once per ``ACTIVATION_REVIEW_POLL_INTERVAL_SECONDS``
    each). A run is bounded so that an outage costs it little: an open core breaker skips
    polling, and the run stops after ``ACTIVATION_RECONCILE_MAX_CONSECUTIVE_UNREACHABLE``
    unanswered reads in a row or once ``ACTIVATION_RECONCILE_BUDGET_SECONDS`` have passed. What
    is left over is counted as ``skipped`` and asked about by the next run. Runs that overlap or
    follow each other closely ask about each case once (``_take_poll``).
    """
    cases = _cases_to_poll(timezone.now())
    counts = {"polled": 0, "activated": 0, "escalated": 0, "unreachable": 0, "skipped": 0}
    breaker = core_breaker()
    deadline = time.monotonic() + settings.ACTIVATION_RECONCILE_BUDGET_SECONDS
    unreachable_in_a_row = 0
    with core_client(client) as core:
        for done, (case_id, reference) in enumerate(cases):
            poll = _take_poll(case_id)
            if poll is None:
                continue  # another run asks about this case in this period
            if (
                unreachable_in_a_row >= settings.ACTIVATION_RECONCILE_MAX_CONSECUTIVE_UNREACHABLE
                or time.monotonic() >= deadline
                or not breaker.allow()  # last: a half-open trial is only taken to be used
            ):
                cache.delete(poll)  # not asked: the next run may take it
                counts["skipped"] = len(cases) - done
                break
            try:
                line_status = core.get_credit_line(reference)
            except CoreUnavailable:
                cache.delete(poll)  # nothing learnt: the next run may ask at once
                breaker.record_failure()
                unreachable_in_a_row += 1
                counts["unreachable"] += 1
                continue
            breaker.record_success()
            unreachable_in_a_row = 0
            counts["polled"] += 1
            if line_status is not None and _record_poll(case_id, line_status):
                counts["activated"] += 1
    counts["escalated"] = escalate_overdue_cases()
    return counts


def _cases_to_poll(now: datetime) -> list[tuple[int, str]]:
    """``(case id, line reference)`` to ask the core about, those awaiting a callback first."""
    limit = settings.ACTIVATION_RECONCILE_MAX_POLLS_PER_RUN
    waiting = list(
        ActivationCase.objects.filter(awaiting_confirmation_past_poll_time(now))
        .order_by("state_changed_at")
        .values_list("pk", "credit_line__reference")[:limit]
    )
    return waiting + _review_cases_due(now, wanted=limit - len(waiting))


def _take_poll(case_id: int) -> str | None:
    """Take this period's poll of a case; return its cache key, or None if another run took it.

    Two runs at once (a second beat for a moment, or runs queued while the workers were down and
    then taken by several workers together) would each ask the core about the same case and
    each put its answer on the timeline. The period is half the reconcile interval, so that runs
    on schedule always find the poll free. The key names the period by the clock (which tests
    move), not by the cache's expiry.
    """
    interval = settings.CELERY_BEAT_SCHEDULE["reconcile-activations"]["schedule"]
    period = max(float(interval) / 2, 1.0)
    key = f"reconcile:poll:{case_id}:{int(timezone.now().timestamp() // period)}"
    # cache.add is atomic: of two runs taking one case's poll, one gets it.
    return key if cache.add(key, True, timeout=int(period) * 2 + 1) else None


def _review_poll_key(case_id: int) -> str:
    return f"reconcile:review-polled:{case_id}"


def _review_cases_due(now: datetime, *, wanted: int) -> list[tuple[int, str]]:
    """Up to ``wanted`` cases in review not asked about within the review poll interval, the
    longest in review first; read in chunks, and no further than needed."""
    in_review = (
        ActivationCase.objects.filter(
            # Only a case whose request went out at least once can have reached the core.
            Exists(CoreRequest.objects.filter(case=OuterRef("pk"), attempts__gte=1)),
            state=S.NEEDS_REVIEW,
            failure_reason__in=REVIEW_REASONS_STILL_POLLED,
        )
        .order_by("state_changed_at")
        .values_list("pk", "credit_line__reference")
    )
    # The marker holds the time of the poll, not just its presence, so that a test moving the
    # clock (and a cache that keeps keys a little longer) still sees the interval as set.
    cutoff = now.timestamp() - settings.ACTIVATION_REVIEW_POLL_INTERVAL_SECONDS
    due: list[tuple[int, str]] = []
    # Usually only the first chunk or two are read: closing the stream once enough are found
    # ends its transaction (and its cursor) here, not whenever the generator is collected.
    with closing(stream(in_review, chunk_size=500)) as cases:
        while len(due) < wanted and (chunk := list(islice(cases, 500))):
            polled_at = cache.get_many([_review_poll_key(case_id) for case_id, _ref in chunk])
            due += [case for case in chunk if polled_at.get(_review_poll_key(case[0]), 0) <= cutoff]
    return due[: max(wanted, 0)]


def _remember_review_poll(case_id: int) -> None:
    interval = settings.ACTIVATION_REVIEW_POLL_INTERVAL_SECONDS
    cache.set(_review_poll_key(case_id), timezone.now().timestamp(), timeout=interval * 2)


@transaction.atomic
def _record_poll(case_id: int, line_status: CreditLineStatus) -> bool:
    """Apply what the core said about a polled case; True if that activated it."""
    case = lock_case(case_id)
    data = {"status": line_status.status, "version": line_status.version}
    body = {"activation_id": line_status.activation_id}
    if case.state == S.AWAITING_CONFIRMATION:
        append_case_event(case, kind="core.polled", actor_type=ActorType.SYSTEM, data=data)
        apply_line_status(case, status=line_status.status, version=line_status.version, body=body)
        return case.state == S.ACTIVATED
    if case.state != S.NEEDS_REVIEW:
        return False  # something else (a callback, another poller, staff) settled it meanwhile
    if line_status.status != CreditLine.Status.ACTIVE:
        # Nothing new for staff: ask again after the interval, without filling the timeline.
        _remember_review_poll(case_id)
        return False
    # The core finished after the case was handed to staff: the line is active, so the case is
    # resolved and the customer told, with the timeline saying it was found by polling.
    why = {"found_by": "poll", "was_in_review_for": case.failure_reason}
    append_case_event(case, kind="core.polled", actor_type=ActorType.SYSTEM, data={**data, **why})
    apply_line_status(
        case, status=line_status.status, version=line_status.version, body=body, event_data=why
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
            case = lock_case(case_id)
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
