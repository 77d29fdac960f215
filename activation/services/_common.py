"""What every activation service shares: locking a case, reaching the core, queueing delivery."""

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.utils import timezone

from accounts.models import User
from portal import logs
from portal.queue import enqueue_on_commit

from ..core.client import CoreClient
from ..errors import CaseNotFound
from ..models import ActivationCase, CaseState

S = CaseState


def lock_case(case_id: int, *, customer: User | None = None) -> ActivationCase:
    # The row lock serialises every change to one case (and its event chain) across processes.
    # Without ``of``, PostgreSQL locks the joined credit line too: ``apply_line_status`` relies
    # on that.
    cases = ActivationCase.objects.select_for_update().select_related("credit_line")
    if customer is not None:
        cases = cases.filter(credit_line__customer=customer)
        # A customer's request is about this one case; a task may lock many in turn.
        logs.bind(case_id=case_id)
    try:
        return cases.get(pk=case_id)
    except ActivationCase.DoesNotExist as error:
        raise CaseNotFound() from error


def core_client(client: CoreClient | None) -> AbstractContextManager[CoreClient]:
    """Use the given client as is, or open (and later close) one from the settings."""
    return nullcontext(client) if client is not None else CoreClient.from_settings()


def enqueue_delivery(request_id: int, *, countdown: float = 0) -> None:
    # If the broker is down the row stays due and the sweeper delivers it later.
    enqueue_on_commit("activation.tasks.deliver_core_request", request_id, countdown=countdown)


def verification_claim(method: str) -> dict[str, str]:
    """How and when the customer proved who they are, as the core's contract spells it."""
    return {"method": method, "verified_at": timezone.now().isoformat().replace("+00:00", "Z")}


def activation_payload(
    case: ActivationCase, *, customer: User, requested_by: str, verification: dict[str, str]
) -> dict[str, Any]:
    """The body of an activation request for ``case`` (``POST /v1/activations``)."""
    return {
        "credit_line_ref": case.credit_line.reference,
        "customer_ref": customer.customer_reference or f"U-{customer.pk}",
        "requested_by": requested_by,
        "verification": verification,
    }
