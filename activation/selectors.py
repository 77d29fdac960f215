"""Reads shared by the customer pages, the back office and the API."""

import string
import unicodedata

from django.db.models import Count, Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404

from accounts.backends import parse_phone_number
from accounts.models import User

from .models import (
    ActivationCase,
    BulkRecoveryJob,
    CaseEvent,
    CaseExport,
    CaseState,
    CreditLine,
    OverrideRequest,
)


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


def case_counts_by_state() -> dict[str, int]:
    """How many cases are in each state, every state listed."""
    counts = dict.fromkeys(CaseState.values, 0)
    for row in ActivationCase.objects.values("state").annotate(total=Count("pk")):
        counts[row["state"]] = row["total"]
    return counts


def search_cases(cases: QuerySet[ActivationCase], term: str) -> QuerySet[ActivationCase]:
    """Find cases by id, credit-line reference, or phone number (whole, or its last 4 digits)."""
    # NFKC makes full-width input from a Chinese keyboard (１２３４, ＣＬ－…) plain ASCII.
    term = unicodedata.normalize("NFKC", term).strip()
    if not term:
        return cases
    if "\x00" in term:
        return cases.none()  # no reference holds one, and PostgreSQL refuses it in a query
    # ASCII digits only: str.isdigit() also accepts ² or ①, which int() refuses.
    digits = "".join(ch for ch in term if ch in string.digits)
    matches = Q(credit_line__reference__iexact=term)
    if len(digits) == 4 and digits == term:
        matches |= Q(credit_line__customer__phone_number__endswith=digits)
    phone = parse_phone_number(term)
    if phone:
        matches |= Q(credit_line__customer__phone_number=phone)
    if digits == term and len(digits) < 10:
        matches |= Q(pk=int(digits))
    return cases.filter(matches)


def pending_overrides(case_id: int) -> QuerySet[OverrideRequest]:
    return OverrideRequest.objects.filter(
        case_id=case_id, status=OverrideRequest.Status.PENDING
    ).select_related("requested_by")


def bulk_recovery_jobs() -> QuerySet[BulkRecoveryJob]:
    """Bulk recoveries, newest first, with who asked for each."""
    return BulkRecoveryJob.objects.select_related("requested_by").order_by("-created_at", "-pk")


def case_exports() -> QuerySet[CaseExport]:
    """Exports of case histories, newest first, with who made each."""
    return CaseExport.objects.select_related("created_by").order_by("-created_at", "-pk")
