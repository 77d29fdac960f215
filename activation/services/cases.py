"""Opening cases."""

from django.db import transaction

from ..models import ActivationCase, ActorType, CreditLine, FailureReason
from ..timeline import append_case_event
from ._common import S


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
