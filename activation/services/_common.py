"""What every activation service shares: locking a case, reaching the core, queueing delivery."""

from contextlib import AbstractContextManager, nullcontext

from django.db import transaction

from accounts.models import User
from portal.errors import DomainError

from ..core.client import CoreClient
from ..models import ActivationCase, CaseState

S = CaseState


class CaseNotFound(DomainError):
    code = "case_not_found"
    http_status = 404


def lock_case(case_id: int, *, customer: User | None = None) -> ActivationCase:
    # The row lock serialises every change to one case (and its event chain) across processes.
    cases = ActivationCase.objects.select_for_update().select_related("credit_line")
    if customer is not None:
        cases = cases.filter(credit_line__customer=customer)
    try:
        return cases.get(pk=case_id)
    except ActivationCase.DoesNotExist as error:
        raise CaseNotFound() from error


def core_client(client: CoreClient | None) -> AbstractContextManager[CoreClient]:
    """Use the given client as is, or open (and later close) one from the settings."""
    return nullcontext(client) if client is not None else CoreClient.from_settings()


def enqueue_delivery(request_id: int, *, countdown: float = 0) -> None:
    from ..tasks import deliver_core_request  # the tasks module imports this one

    # robust: if the broker is down the row stays due and the sweeper delivers it later, so the
    # customer's committed retry must not turn into an error page.
    transaction.on_commit(
        lambda: deliver_core_request.apply_async((request_id,), countdown=countdown), robust=True
    )
