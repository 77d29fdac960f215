"""Reads shared by the customer pages, the back office and the API."""

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User

from .models import ActivationCase, CaseEvent, CreditLine


def credit_lines_for_customer(customer: User) -> QuerySet[CreditLine]:
    """The customer's credit lines, each with its cases newest first."""
    cases = ActivationCase.objects.order_by("-opened_at", "-pk")
    return (
        CreditLine.objects.filter(customer=customer)
        .prefetch_related(Prefetch("cases", queryset=cases))
        .order_by("reference")
    )


def case_for_customer(customer: User, case_id: int) -> ActivationCase:
    """One of the customer's own cases, or 404: another customer's case does not exist for them."""
    return get_object_or_404(
        ActivationCase.objects.select_related("credit_line"),
        pk=case_id,
        credit_line__customer=customer,
    )


def case_timeline(case_id: int) -> QuerySet[CaseEvent]:
    """A case's events in order, with the acting user."""
    return CaseEvent.objects.filter(case_id=case_id).select_related("actor").order_by("seq")
