"""What staff do to a stuck case. Permissions are enforced here, not only in the back office."""

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.roles import can
from verification.services import lift_activation_lockout

from ..errors import NotPermitted, OverrideNotAllowed, ReasonRequired, TransitionNotAllowed
from ..models import (
    ActivationCase,
    ActorType,
    CoreRequest,
    FailureReason,
    OverrideRequest,
)
from ..timeline import SYSTEM_CONTEXT, RequestContext, append_case_event
from ..transitions import transition
from ._common import S, activation_payload, enqueue_delivery, lock_case, verification_claim

# What a closed case may be closed for; the staff member adds free text.
CLOSE_REASONS = ("customer_withdrew", "fraud_suspected", "duplicate", "line_closed", "other")
# A failure whose submission's outcome is unknown: resubmitting reuses its idempotency key.
UNKNOWN_OUTCOME_REASONS = frozenset({FailureReason.CORE_UNAVAILABLE, FailureReason.SYNC_TIMEOUT})
BULK_RECOVERY_REASONS = UNKNOWN_OUTCOME_REASONS


def _require(staff: User, permission: str) -> None:
    if not can(staff, permission):
        raise NotPermitted(_("You are not allowed to do this."), permission=permission)


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired(_("Give a reason: it goes on the case's timeline."))
    return reason


def _staff_actor(staff: User, context: RequestContext) -> dict[str, Any]:
    return {"actor_type": ActorType.STAFF, "actor": staff, "context": context}


@transaction.atomic
def assign_case(
    *,
    case_id: int,
    staff: User,
    assignee: User | None,
    reason: str,
    context: RequestContext = SYSTEM_CONTEXT,
) -> ActivationCase:
    """Give the case to ``assignee`` (None: unassign)."""
    _require(staff, "work_case")
    reason = _require_reason(reason)
    if assignee is not None and not can(assignee, "work_case"):
        raise NotPermitted(_("Cases can only be assigned to staff who work cases."))
    case = lock_case(case_id)
    if case.assignee_id == (assignee.pk if assignee else None):
        return case
    before = case.assignee_id
    case.assignee = assignee
    case.save(update_fields=["assignee"])
    append_case_event(
        case,
        kind="case.assigned" if assignee else "case.unassigned",
        data={"from": before, "to": assignee.pk if assignee else None, "reason": reason},
        **_staff_actor(staff, context),
    )
    return case


@transaction.atomic
def add_note(
    *, case_id: int, staff: User, text: str, context: RequestContext = SYSTEM_CONTEXT
) -> None:
    """Add a staff note to the case's timeline."""
    _require(staff, "work_case")
    text = _require_reason(text)
    case = lock_case(case_id)
    append_case_event(case, kind="note.added", data={"text": text}, **_staff_actor(staff, context))


def _last_request(case: ActivationCase) -> CoreRequest | None:
    return CoreRequest.objects.filter(case=case).order_by("-created_at", "-pk").first()


def _resubmit(case: ActivationCase, *, staff: User, data: dict[str, Any], context) -> CoreRequest:
    """Queue the case for the core again; reuse the last key if that submission's fate is unknown.

    A submission that ended in "no answer" may have been carried out by the core: sending it
    again with the same key and body makes the core answer with what it did, never activate twice.
    """
    last = _last_request(case)
    if last is not None and case.failure_reason in UNKNOWN_OUTCOME_REASONS:
        last.status = CoreRequest.Status.PENDING
        last.attempts = 0
        last.next_attempt_at = timezone.now()
        last.completed_at = None
        last.save(update_fields=["status", "attempts", "next_attempt_at", "completed_at"])
        request = last
    else:
        payload = activation_payload(
            case,
            customer=case.credit_line.customer,
            requested_by="staff",
            # The customer's own verification when there was one, else the staff override's.
            verification=(last.payload.get("verification") if last else None)
            or verification_claim("staff_override"),
        )
        request = CoreRequest.objects.create(case=case, payload=payload)
    transition(
        case,
        to=S.SUBMITTING,
        data={**data, "core_request": request.pk, "idempotency_key": str(request.idempotency_key)},
        **_staff_actor(staff, context),
    )
    enqueue_delivery(request.pk)
    return request


def _customer_verified(case: ActivationCase) -> bool:
    """The customer's own verification once sent this case on: a right code that the risk
    checkpoint then held (a step-up not met, a review) does not count."""
    return case.events.filter(
        kind="state.changed", state_after=S.SUBMITTING, actor_type=ActorType.CUSTOMER
    ).exists()


@transaction.atomic
def resubmit_case(
    *, case_id: int, staff: User, reason: str, context: RequestContext = SYSTEM_CONTEXT
) -> CoreRequest:
    """Send a case the customer already verified (and the checkpoint did not hold) to the core."""
    _require(staff, "work_case")
    reason = _require_reason(reason)
    case = lock_case(case_id)
    if case.state != S.NEEDS_REVIEW:
        raise TransitionNotAllowed(current=case.state, target=S.SUBMITTING)
    # The checkpoint held the case although the code was right (a new phone, a changed number):
    # that code vouches for nothing, and one agent resending the case would undo the hold.
    if case.failure_reason == FailureReason.RISK_REVIEW:
        raise OverrideNotAllowed(
            _("The risk checkpoint held this case: resubmitting needs a supervisor's approval.")
        )
    if not _customer_verified(case):
        raise OverrideNotAllowed(
            _("The customer never verified this case: resubmitting needs a supervisor's approval.")
        )
    return _resubmit(case, staff=staff, data={"reason": reason}, context=context)


@transaction.atomic
def return_to_customer(
    *, case_id: int, staff: User, reason: str, context: RequestContext = SYSTEM_CONTEXT
) -> ActivationCase:
    """Hand the case back for the customer to verify again, lifting their lock-out."""
    _require(staff, "work_case")
    reason = _require_reason(reason)
    case = lock_case(case_id)
    transition(
        case,
        to=S.PENDING_VERIFICATION,
        data={"reason": reason, "lockout_cleared": True},
        **_staff_actor(staff, context),
    )
    lift_activation_lockout(user=case.credit_line.customer)
    return case


@transaction.atomic
def close_case(
    *,
    case_id: int,
    staff: User,
    reason_code: str,
    text: str,
    context: RequestContext = SYSTEM_CONTEXT,
) -> ActivationCase:
    """Close a case for good, with a reason from the list and the staff member's words."""
    _require(staff, "work_case")
    if reason_code not in CLOSE_REASONS:
        raise ReasonRequired(_("Choose why the case is closed."), choices=list(CLOSE_REASONS))
    text = _require_reason(text)
    case = lock_case(case_id)
    transition(
        case,
        to=S.CLOSED,
        data={"close_reason": reason_code, "text": text},
        **_staff_actor(staff, context),
    )
    return case


# --- Overrides: four eyes -----------------------------------------------------------------------


@transaction.atomic
def request_override(
    *,
    case_id: int,
    staff: User,
    kind: str,
    reason: str,
    core_reference: str = "",
    context: RequestContext = SYSTEM_CONTEXT,
) -> OverrideRequest:
    """Ask a supervisor to mark a case activated, or to resubmit it without verification."""
    _require(staff, "request_override")
    reason = _require_reason(reason)
    if kind not in OverrideRequest.Kind.values:
        raise OverrideNotAllowed(_("Unknown kind of override."))
    core_reference = core_reference.strip()
    if kind == OverrideRequest.Kind.MARK_ACTIVATED and not core_reference:
        raise ReasonRequired(_("Give the core's reference for the activation."))
    case = lock_case(case_id)
    if case.state != S.NEEDS_REVIEW:
        raise OverrideNotAllowed(_("Only a case waiting for review can be overridden."))
    if OverrideRequest.objects.filter(case=case, status=OverrideRequest.Status.PENDING).exists():
        raise OverrideNotAllowed(_("This case already has an override waiting for approval."))
    override = OverrideRequest.objects.create(
        case=case,
        kind=kind,
        reason=reason,
        core_reference=core_reference,
        requested_by=staff,
        case_state_at_request=case.state,
        case_changed_at_request=case.state_changed_at,
    )
    append_case_event(
        case,
        kind="override.requested",
        data={"override": override.pk, "kind": kind, "reason": reason, "reference": core_reference},
        **_staff_actor(staff, context),
    )
    return override


def _lock_pending_override(override_id: int, staff: User) -> OverrideRequest:
    _require(staff, "approve_override")
    override = OverrideRequest.objects.select_for_update().get(pk=override_id)
    if override.status != OverrideRequest.Status.PENDING:
        raise OverrideNotAllowed(_("This override was already decided."))
    if override.requested_by_id == staff.pk:
        raise NotPermitted(_("You cannot decide your own override request."))
    return override


def _decide(override: OverrideRequest, staff: User, status: str, reason: str, now: datetime):
    override.status = status
    override.decided_by = staff
    override.decided_at = now
    override.decision_reason = reason
    override.save(update_fields=["status", "decided_by", "decided_at", "decision_reason"])


@transaction.atomic
def approve_override(
    *, override_id: int, staff: User, reason: str, context: RequestContext = SYSTEM_CONTEXT
) -> OverrideRequest:
    """A second person approves an override, which then takes effect at once."""
    reason = _require_reason(reason)
    override = _lock_pending_override(override_id, staff)
    case = lock_case(override.case_id)
    if (
        case.state != override.case_state_at_request
        or case.state_changed_at != override.case_changed_at_request
    ):
        raise OverrideNotAllowed(
            _("The case has changed since the override was requested; ask for a new one.")
        )
    _decide(override, staff, OverrideRequest.Status.APPROVED, reason, timezone.now())
    names = {
        "override": override.pk,
        "kind": override.kind,
        "requested_by": override.requested_by.get_username(),
        "approved_by": staff.get_username(),
        "reason": reason,
    }
    append_case_event(case, kind="override.approved", data=names, **_staff_actor(staff, context))
    if override.kind == OverrideRequest.Kind.MARK_ACTIVATED:
        transition(
            case,
            to=S.ACTIVATED,
            data={**names, "core_reference": override.core_reference},
            **_staff_actor(staff, context),
        )
    else:
        _resubmit(case, staff=staff, data=names, context=context)
    return override


@transaction.atomic
def reject_override(
    *, override_id: int, staff: User, reason: str, context: RequestContext = SYSTEM_CONTEXT
) -> OverrideRequest:
    reason = _require_reason(reason)
    override = _lock_pending_override(override_id, staff)
    case = lock_case(override.case_id)
    _decide(override, staff, OverrideRequest.Status.REJECTED, reason, timezone.now())
    append_case_event(
        case,
        kind="override.rejected",
        data={"override": override.pk, "kind": override.kind, "reason": reason},
        **_staff_actor(staff, context),
    )
    return override
