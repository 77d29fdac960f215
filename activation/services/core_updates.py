"""What the core reports about a line, by callback or by poll, and escalation of silence."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.errors import DomainError

from ..core.client import CoreClient, CoreUnavailable, CreditLineStatus
from ..models import OPEN_STATES, ActivationCase, ActorType, CoreCallback, CreditLine, FailureReason
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
    case = lock_case(case.pk)
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
    with core_client(client) as core:
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
    case = lock_case(case_id)
    if case.state != S.AWAITING_CONFIRMATION:
        return False  # something else (a callback, another poller) settled it meanwhile
    append_case_event(
        case,
        kind="core.polled",
        actor_type=ActorType.SYSTEM,
        data={"status": line_status.status, "version": line_status.version},
    )
    apply_line_status(
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
