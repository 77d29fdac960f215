"""The case state machine: the one place where a case changes state."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from accounts.models import User
from portal import instruments
from portal.queue import enqueue_on_commit

from .errors import TransitionNotAllowed
from .models import (
    OPEN_STATES,
    TERMINAL_STATES,
    ActivationCase,
    ActorType,
    CaseEvent,
    CaseState,
    FailureReason,
)
from .timeline import SYSTEM_CONTEXT, RequestContext, append_case_event

S = CaseState

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    # A risk hold may stop a customer mid-verification (a right code from the wrong picture).
    S.PENDING_VERIFICATION: frozenset({S.SUBMITTING, S.FAILED, S.NEEDS_REVIEW}),
    S.FAILED: frozenset({S.PENDING_VERIFICATION, S.NEEDS_REVIEW}),
    S.SUBMITTING: frozenset({S.ACTIVATED, S.AWAITING_CONFIRMATION, S.NEEDS_REVIEW}),
    S.AWAITING_CONFIRMATION: frozenset({S.ACTIVATED, S.NEEDS_REVIEW}),
    S.NEEDS_REVIEW: frozenset({S.PENDING_VERIFICATION, S.SUBMITTING, S.ACTIVATED, S.CLOSED}),
    S.ACTIVATED: frozenset(),
    S.CLOSED: frozenset(),
}

# The system gave up waiting on the core: the customer is told staff now finish the activation.
ESCALATIONS_TOLD_TO_CUSTOMER = frozenset(
    {FailureReason.CORE_UNAVAILABLE, FailureReason.SYNC_TIMEOUT, FailureReason.CORE_REJECTED}
)

# States whose case carries a failure reason; every other state clears it.
STATES_WITH_REASON = frozenset({S.FAILED, S.NEEDS_REVIEW})
# The reasons a transition is counted under in the metrics (none: "").
REASON_LABELS = frozenset({"", *FailureReason.values})


def is_allowed(current: str, target: str, *, actor_type: str) -> bool:
    """Whether ``current`` may become ``target`` when ``actor_type`` causes it."""
    if target in ALLOWED_TRANSITIONS.get(current, ()):
        return True
    # The core reporting the line active wins from any open state: a late answer is never lost.
    return target == S.ACTIVATED and current in OPEN_STATES and actor_type == ActorType.CORE


def transition(
    case: ActivationCase,
    *,
    to: CaseState,
    actor_type: ActorType,
    actor: User | None = None,
    reason: str = "",
    detail: str = "",
    data: dict[str, Any] | None = None,
    context: RequestContext = SYSTEM_CONTEXT,
    also: dict[str, Any] | None = None,
) -> CaseEvent:
    """Move a locked case to ``to`` and record it, or raise and change nothing; ``also`` sets
    more of the case's fields in the same write."""
    before = case.state
    if not is_allowed(before, to, actor_type=actor_type):
        raise TransitionNotAllowed(current=before, target=to)
    if to == S.FAILED and not reason:
        raise ValueError("A case can only fail with a reason.")

    now = timezone.now()
    case.state = to
    case.state_changed_at = now
    case.failure_reason = reason if to in STATES_WITH_REASON else ""
    case.failure_detail = detail if to in STATES_WITH_REASON else ""
    fields = ["state", "state_changed_at", "failure_reason", "failure_detail"]
    for name, value in (also or {}).items():
        setattr(case, name, value)
        fields.append(name)
    if to == S.SUBMITTING:
        case.sla_due_at = now + timedelta(minutes=settings.ACTIVATION_SLA_MINUTES)
        fields.append("sla_due_at")
    if to in TERMINAL_STATES:
        case.closed_at = now
        fields.append("closed_at")
    case.save(update_fields=fields)
    instruments.case_transitions.labels(to, instruments.bounded(reason, REASON_LABELS)).inc()

    if to in TERMINAL_STATES or (to == S.NEEDS_REVIEW and reason in ESCALATIONS_TOLD_TO_CUSTOMER):
        enqueue_on_commit("activation.tasks.notify_case_resolved", case.pk)

    payload = {"reason": reason, "detail": detail} if reason else {}
    payload.update(data or {})
    return append_case_event(
        case,
        kind="state.changed",
        actor_type=actor_type,
        actor=actor,
        state_before=before,
        state_after=to,
        data=payload,
        context=context,
    )
