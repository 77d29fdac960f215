"""Reads shared by the customer pages, the back office and the API."""

import math
import string
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import (
    Aggregate,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Prefetch,
    Q,
    QuerySet,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import TruncHour
from django.shortcuts import get_object_or_404

from accounts.backends import parse_phone_number
from accounts.models import User

from .models import (
    OPEN_STATES,
    TERMINAL_STATES,
    ActivationCase,
    BulkRecoveryJob,
    CaseEvent,
    CaseExport,
    CaseState,
    CoreRequest,
    CreditLine,
    FailureReason,
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


def open_case_counts() -> dict[tuple[str, str], int]:
    """How many open cases there are per ``(state, failure reason)``, every open state listed.

    Settled cases are left out: they only accumulate, and counting them would read the whole
    table; open ones are read through the partial index that covers only them.
    """
    counts: dict[tuple[str, str], int] = dict.fromkeys(((s, "") for s in OPEN_STATES), 0)
    rows = (
        ActivationCase.objects.filter(state__in=OPEN_STATES)
        .values("state", "failure_reason")
        .annotate(total=Count("pk"))
    )
    for row in rows:
        counts[row["state"], row["failure_reason"]] = row["total"]
    return counts


def awaiting_confirmation_past_poll_time(now: datetime) -> Q:
    """Cases the core accepted (202) but has not confirmed within
    ``ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS``: reconciliation asks the core about these."""
    poll_before = now - timedelta(seconds=settings.ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS)
    return Q(state=CaseState.AWAITING_CONFIRMATION, state_changed_at__lte=poll_before)


def open_past_sla(now: datetime) -> Q:
    """Open cases whose SLA has passed (``sla_due_at`` stays set once a case is settled)."""
    return Q(state__in=OPEN_STATES, sla_due_at__lt=now)


def unassigned_in_review() -> Q:
    return Q(state=CaseState.NEEDS_REVIEW, assignee__isnull=True)


@dataclass(frozen=True)
class OpenCaseWatch:
    """Open cases someone should be looking at."""

    awaiting_confirmation_past_poll_time: int
    past_sla: int
    unassigned_in_review: int


def open_case_watch(now: datetime) -> OpenCaseWatch:
    """Count the open cases that need attention, in one query over open cases only."""
    counts = ActivationCase.objects.filter(state__in=OPEN_STATES).aggregate(
        awaiting=Count("pk", filter=awaiting_confirmation_past_poll_time(now)),
        past_sla=Count("pk", filter=open_past_sla(now)),
        unassigned=Count("pk", filter=unassigned_in_review()),
    )
    return OpenCaseWatch(
        awaiting_confirmation_past_poll_time=counts["awaiting"],
        past_sla=counts["past_sla"],
        unassigned_in_review=counts["unassigned"],
    )


def core_requests_due(now: datetime) -> Q:
    """Outbox rows to deliver now: pending and due, or in flight with their lease run out."""
    pending_and_due = Q(status=CoreRequest.Status.PENDING, next_attempt_at__lte=now)
    # A delivery whose lease ran out died mid-flight (worker killed, broker lost the message).
    abandoned = Q(status=CoreRequest.Status.IN_FLIGHT, lease_expires_at__lte=now)
    return pending_and_due | abandoned


@dataclass(frozen=True)
class OutboxBacklog:
    due: int
    in_flight: int
    oldest_due_since: datetime | None


def outbox_backlog(now: datetime) -> OutboxBacklog:
    """Outbox rows due, in flight under a live lease, and since when the oldest has been due,
    in one query over undelivered rows only."""
    due = core_requests_due(now)
    due_since = Case(
        When(status=CoreRequest.Status.IN_FLIGHT, then="lease_expires_at"),
        default="next_attempt_at",
    )
    counts = CoreRequest.objects.filter(
        status__in=[CoreRequest.Status.PENDING, CoreRequest.Status.IN_FLIGHT]
    ).aggregate(
        due=Count("pk", filter=due),
        in_flight=Count(
            "pk", filter=Q(status=CoreRequest.Status.IN_FLIGHT, lease_expires_at__gt=now)
        ),
        oldest_due_since=Min(due_since, filter=due),
    )
    return OutboxBacklog(
        due=counts["due"],
        in_flight=counts["in_flight"],
        oldest_due_since=counts["oldest_due_since"],
    )


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


# The outcomes the dashboard charts: where a case's attempt ended up.
OUTCOME_STATES = (CaseState.ACTIVATED, CaseState.FAILED, CaseState.NEEDS_REVIEW, CaseState.CLOSED)
OUTCOME_EVENT_KINDS = ("case.opened", "state.changed")


def outcome_events(since: datetime) -> QuerySet[CaseEvent]:
    """Openings (a failed activation reaching us) and state changes into an outcome since
    ``since``. The partial index ``case_event_outcome_at`` holds exactly these, so the cost
    follows the window's traffic, not the table's size."""
    return CaseEvent.objects.filter(
        kind__in=OUTCOME_EVENT_KINDS, state_after__in=OUTCOME_STATES, created_at__gte=since
    )


def outcomes_by_hour(since: datetime) -> dict[tuple[datetime, str], int]:
    """How many cases reached each outcome in each hour (of the current time zone) since
    ``since``: ``{(hour, state): count}``, hours without any left out."""
    rows = (
        outcome_events(since)
        .annotate(hour=TruncHour("created_at"))
        .values("hour", "state_after")
        .annotate(total=Count("pk"))
        .order_by()
    )
    return {(row["hour"], row["state_after"]): row["total"] for row in rows}


def failures_by_reason(since: datetime) -> dict[str, int]:
    """How many times since ``since`` a case failed or went to staff, per reason."""
    rows = (
        outcome_events(since)
        .filter(state_after__in=[CaseState.FAILED, CaseState.NEEDS_REVIEW])
        .values(reason=KT("data__reason"))
        .annotate(total=Count("pk"))
        .order_by()
    )
    counts = dict.fromkeys(FailureReason.values, 0)
    for row in rows:
        if row["reason"] in counts:
            counts[row["reason"]] += row["total"]
    return counts


@dataclass(frozen=True)
class ReviewQueue:
    """The cases waiting for staff."""

    waiting: int
    unassigned: int
    oldest_case_id: int | None
    oldest_since: datetime | None


def review_queue() -> ReviewQueue:
    """How many cases wait for staff, how many nobody holds, and the one waiting longest."""
    waiting = ActivationCase.objects.filter(state=CaseState.NEEDS_REVIEW)
    counts = waiting.aggregate(
        waiting=Count("pk"), unassigned=Count("pk", filter=Q(assignee__isnull=True))
    )
    oldest = waiting.order_by("state_changed_at", "pk").values("pk", "state_changed_at").first()
    return ReviewQueue(
        waiting=counts["waiting"],
        unassigned=counts["unassigned"],
        oldest_case_id=oldest["pk"] if oldest else None,
        oldest_since=oldest["state_changed_at"] if oldest else None,
    )


RESOLUTION_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class ResolutionTimes:
    """How long cases settled in a window took from opening to settling."""

    settled: int
    # {percentile: seconds}; empty when nothing settled.
    seconds: dict[int, float]


class _PercentileDisc(Aggregate):
    """PostgreSQL's ``percentile_disc(f) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_disc"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=fraction, **extra)


def resolution_times(since: datetime) -> ResolutionTimes:
    """Percentiles of opening-to-settling time for cases activated or closed since ``since``.

    PostgreSQL computes them in one query over the ``(state, state_changed_at)`` index; other
    databases (the quick test path) get the same nearest-rank percentiles computed here.
    """
    settled = ActivationCase.objects.filter(
        state__in=TERMINAL_STATES, state_changed_at__gte=since
    ).annotate(took=ExpressionWrapper(F("state_changed_at") - F("opened_at"), DurationField()))
    if connection.vendor == "postgresql":
        row = settled.aggregate(
            settled=Count("pk"),
            **{f"p{p}": _PercentileDisc("took", p / 100) for p in RESOLUTION_PERCENTILES},
        )
        seconds = {
            p: row[f"p{p}"].total_seconds()
            for p in RESOLUTION_PERCENTILES
            if row[f"p{p}"] is not None
        }
        return ResolutionTimes(settled=row["settled"], seconds=seconds)
    took = sorted(value.total_seconds() for value in settled.values_list("took", flat=True))
    seconds = {
        p: took[max(math.ceil(p / 100 * len(took)) - 1, 0)]
        for p in (RESOLUTION_PERCENTILES if took else ())
    }
    return ResolutionTimes(settled=len(took), seconds=seconds)
