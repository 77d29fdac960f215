"""Reads for the staff API: the queue in the back office's order, and one case with its parts."""

from datetime import UTC, datetime

from django.db.models import DateTimeField, QuerySet, Value
from django.db.models.functions import Coalesce

from activation import selectors
from activation.models import ActivationCase, CoreRequest, OverrideRequest

# Cases with no SLA yet sort after every case that has one, as in the back office's queue.
NO_SLA = datetime(9999, 12, 31, tzinfo=UTC)


def case_queue(
    *,
    staff,
    state: str = "",
    failure_reason: str = "",
    assignee: str | int = "",
    q: str = "",
) -> QuerySet[ActivationCase]:
    """Cases as the back office's queue lists them, filtered; ``assignee`` is "me", "none" or
    a staff member's id. Ordered by ``queue_due`` (the SLA, none last), opening time and id."""
    cases = ActivationCase.objects.select_related("credit_line__customer", "assignee").annotate(
        queue_due=Coalesce("sla_due_at", Value(NO_SLA, output_field=DateTimeField()))
    )
    if state:
        cases = cases.filter(state=state)
    if failure_reason:
        cases = cases.filter(failure_reason=failure_reason)
    if assignee == "me":
        cases = cases.filter(assignee=staff)
    elif assignee == "none":
        cases = cases.filter(assignee__isnull=True)
    elif assignee != "":
        cases = cases.filter(assignee_id=assignee)
    return selectors.search_cases(cases, q) if q else cases


def case_for_staff(case_id: int) -> ActivationCase | None:
    return (
        ActivationCase.objects.select_related("credit_line__customer", "assignee")
        .filter(pk=case_id)
        .first()
    )


def case_core_requests(case_id: int) -> QuerySet[CoreRequest]:
    """The case's messages to the core, oldest first."""
    return CoreRequest.objects.filter(case_id=case_id).order_by("created_at", "pk")


def case_overrides(case_id: int) -> QuerySet[OverrideRequest]:
    """The case's override requests, newest first, with who asked and who decided."""
    return (
        OverrideRequest.objects.filter(case_id=case_id)
        .select_related("requested_by", "decided_by")
        .order_by("-requested_at", "-pk")
    )
