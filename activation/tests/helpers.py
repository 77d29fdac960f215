"""Bring a case to a state the way a customer would: through the services."""

from activation import services
from activation.models import ActivationCase, CoreRequest
from tests.factories import open_failed_case
from tests.fixtures import last_sms_code


def submitted_case(customer, capture_on_commit) -> tuple[ActivationCase, CoreRequest]:
    """A case the customer has verified, with its outbox row written but not yet delivered."""
    case = open_failed_case(customer)
    with capture_on_commit(execute=True):
        services.start_verification(case_id=case.pk, customer=customer)
    with capture_on_commit(execute=False):
        services.verify_and_submit(case_id=case.pk, customer=customer, code=last_sms_code())
    case.refresh_from_db()
    return case, CoreRequest.objects.get(case=case)


def business_state() -> tuple:
    """Everything a bad request must leave as it was: cases, lines, timelines, audit, outbox."""
    from activation.models import CaseEvent, CoreCallback, CreditLine, OverrideRequest
    from audit.models import SystemEvent

    return (
        list(
            ActivationCase.objects.order_by("pk").values_list(
                "pk", "state", "failure_reason", "assignee_id"
            )
        ),
        list(CreditLine.objects.order_by("pk").values_list("pk", "status", "core_version")),
        list(CaseEvent.objects.order_by("pk").values_list("pk", "hash")),
        list(OverrideRequest.objects.order_by("pk").values_list("pk", "status")),
        SystemEvent.objects.count(),
        CoreRequest.objects.count(),
        CoreCallback.objects.count(),
    )
