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
    BooleanField,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FilteredRelation,
    Max,
    Min,
    Prefetch,
    Q,
    QuerySet,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KT
from django.db.models.functions import Right, TruncHour
from django.shortcuts import get_object_or_404
from django_otp_webauthn.models import WebAuthnCredential

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
    CoreSubmissionSwitch,
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


def case_status_for_customer(customer: User, case_id: int) -> ActivationCase:
    """``case_for_customer`` with what its status panel shows beside it, read in the same
    statement: ``core_paused`` (core submissions are paused) and ``customer_has_passkey``."""
    # Read on every request, as emergency.core_submissions_paused() and passkeys.has_passkey()
    # read them (tests hold them equal): a supervisor's switch is seen by the next page on every
    # node. Written as SQL because an Exists() costs more to compile than the query it saves.
    quote = connection.ops.quote_name
    switch, passkey = CoreSubmissionSwitch._meta, WebAuthnCredential._meta
    # Only names from the models' metadata go into the text; the customer is a parameter.
    paused = (
        f"EXISTS (SELECT 1 FROM {quote(switch.db_table)} WHERE {quote(switch.pk.column)} = 1"  # noqa: S608
        f" AND {quote(switch.get_field('paused').column)})"
    )
    has_passkey = (
        f"EXISTS (SELECT 1 FROM {quote(passkey.db_table)}"  # noqa: S608
        f" WHERE {quote(passkey.get_field('user').column)} = %s"
        f" AND {quote(passkey.get_field('confirmed').column)})"
    )
    return get_object_or_404(
        ActivationCase.objects.select_related("credit_line")
        # Only what the status page and its JSON show: fewer columns to read and fields to
        # build. A field left out costs a query when touched, which the status page's query
        # tests catch in every state.
        .only("state", "failure_reason", "credit_line__product_name", "credit_line__reference")
        .annotate(
            core_paused=RawSQL(paused, (), output_field=BooleanField()),  # noqa: S611
            customer_has_passkey=RawSQL(  # noqa: S611
                has_passkey, (customer.pk,), output_field=BooleanField()
            ),
        ),
        pk=case_id,
        credit_line__customer=customer,
    )


def case_for_app_session(case_id: int, *, session_id: int) -> ActivationCase | None:
    """The case, if it is the customer's whose app session ``session_id`` is not revoked, with
    that session (``app_session``, its ``user`` the customer) read in the same statement.

    None when either is missing: the caller then tells which (a dead session, or no such case).
    The rest of the session's checks (the token's user, an active non-staff account, no
    password change since) are the caller's, as for a session read alone.
    """
    sessions = "credit_line__customer__app_sessions"
    try:
        case = (
            ActivationCase.objects.annotate(
                app_session=FilteredRelation(
                    sessions,
                    condition=Q(**{f"{sessions}__pk": session_id, f"{sessions}__revoked_at": None}),
                )
            )
            .select_related("credit_line__customer", "app_session")
            .get(pk=case_id, app_session__isnull=False)  # get(): no ORDER BY to compile
        )
    except ActivationCase.DoesNotExist:
        return None
    case.app_session.user = case.credit_line.customer
    return case


def case_timeline(case_id: int) -> QuerySet[CaseEvent]:
    """A case's events in order, with the acting user."""
    return CaseEvent.objects.filter(case_id=case_id).select_related("actor").order_by("seq")


# How many events of a case's timeline the case page shows at a time.
TIMELINE_PAGE_SIZE = 50


@dataclass(frozen=True)
class TimelinePage:
    """One page of a case's timeline: page 1 holds the newest events; each page is in order."""

    events: list[CaseEvent]
    number: int
    pages: int
    total: int

    @property
    def first_seq(self) -> int:
        return self.events[0].seq if self.events else 0

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0


def case_timeline_page(
    case_id: int, *, page: int = 1, per_page: int = TIMELINE_PAGE_SIZE
) -> TimelinePage:
    """Page ``page`` of the case's timeline, counted from the newest events, in two queries
    whatever the timeline's length (both read the ``(case, seq)`` unique index)."""
    # A case's events are numbered 1, 2, 3 … with no gap (the hash chain links each to the one
    # before), so the newest number is the count and a page is a range of numbers.
    total = CaseEvent.objects.filter(case_id=case_id).aggregate(last=Max("seq"))["last"] or 0
    pages = max(math.ceil(total / per_page), 1)
    number = min(max(page, 1), pages)
    newest = total - (number - 1) * per_page
    events = list(case_timeline(case_id).filter(seq__gt=newest - per_page, seq__lte=newest))
    return TimelinePage(events=events, number=number, pages=pages, total=total)


# How many notes, and how many requests to the core, the case page shows: the newest ones.
CASE_PAGE_NOTES = 20
CASE_PAGE_CORE_REQUESTS = 20


def latest_case_notes(case_id: int, *, limit: int = CASE_PAGE_NOTES) -> list[CaseEvent]:
    """The case's newest staff notes, oldest of them first."""
    notes = case_timeline(case_id).filter(kind="note.added").order_by("-seq")[:limit]
    return list(reversed(notes))


def latest_core_requests(case_id: int, *, limit: int = CASE_PAGE_CORE_REQUESTS) -> Q:
    """Which of the case's requests to the core the case page shows: the newest ``limit``."""
    newest = CoreRequest.objects.filter(case_id=case_id).order_by("-created_at", "-pk")
    return Q(pk__in=newest.values("pk")[:limit])


# The back office counts up to this many cases of one kind; past it, it says "more than".
QUEUE_COUNT_CAP = 10_000


def count_up_to(queryset: QuerySet, cap: int) -> int:
    """How many rows ``queryset`` holds, reading no more than ``cap + 1`` of them: a count
    above ``cap`` means "more than ``cap``"."""
    return queryset.order_by().values("pk")[: cap + 1].count()


@dataclass(frozen=True)
class StateCount:
    state: str
    count: int
    more: bool  # there are more than ``count``


def queue_state_counts(cap: int | None = None) -> list[StateCount]:
    """How many cases are in each state, every state listed, in three queries whatever the
    table's size: open states exactly (they are few and indexed), settled ones up to ``cap``
    (``QUEUE_COUNT_CAP`` unless given)."""
    cap = QUEUE_COUNT_CAP if cap is None else cap
    open_counts = dict(
        ActivationCase.objects.filter(state__in=OPEN_STATES)
        .values("state")
        .annotate(total=Count("pk"))
        .values_list("state", "total")
    )
    counts = []
    for state in CaseState.values:
        if state in OPEN_STATES:
            counts.append(StateCount(state, open_counts.get(state, 0), more=False))
        else:
            settled = count_up_to(ActivationCase.objects.filter(state=state), cap)
            counts.append(StateCount(state, min(settled, cap), more=settled > cap))
    return counts


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


# Search reads at most this many matching cases (past it, the queue says "more than").
SEARCH_MATCHES_CAP = 10_000


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
    # Each way of matching is its own indexed lookup, and their union names the cases: an OR
    # across the case, credit-line and customer tables would read all three whole.
    everyone = ActivationCase.objects.order_by()
    matches = [everyone.filter(credit_line__reference__iexact=term)]  # credit_line_reference_upper
    if len(digits) == 4 and digits == term:
        matches.append(  # user_phone_last_digits; LIKE '%1234' would read every customer
            everyone.alias(phone_tail=Right("credit_line__customer__phone_number", 4)).filter(
                phone_tail=digits
            )
        )
    phone = parse_phone_number(term)
    if phone:
        matches.append(everyone.filter(credit_line__customer__phone_number=phone))
    if digits == term and len(digits) < 10:
        matches.append(everyone.filter(pk=int(digits)))
    first, *others = (match.values_list("pk", flat=True) for match in matches)
    # Read the matching ids first (few: a number's last four digits are shared by one customer
    # in 10,000): inside the page's query, under its ORDER BY … LIMIT, PostgreSQL would rather
    # walk the whole queue in order and test each case against the union.
    found = list((first.union(*others) if others else first)[: SEARCH_MATCHES_CAP + 1])
    return cases.filter(pk__in=found)


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
