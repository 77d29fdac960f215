"""Reconciliation when callbacks are lost and the core is down: nothing stuck, nothing unbounded."""

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.utils import timezone

from activation import services
from activation.core.client import CoreClient
from activation.models import ActivationCase, CaseEvent, CaseState, CoreRequest, CreditLine
from tests.factories import CustomerFactory, open_failed_case
from tests.fixtures import last_sms_code, wait_until
from verification.sms import LocmemBackend

from .helpers import submitted_case

pytestmark = pytest.mark.django_db


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return super().handle_request(request)


@pytest.fixture
def counted_core(settings) -> Iterator[tuple[CoreClient, CountingTransport]]:
    """A core client for the configured URL whose calls are counted."""
    transport = CountingTransport()
    client = CoreClient(
        base_url=settings.CORE_API_URL,
        token=settings.CORE_API_TOKEN,
        connect_timeout=settings.CORE_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.CORE_READ_TIMEOUT_SECONDS,
        transport=transport,
    )
    with client:
        yield client, transport


def awaiting_case(customer, core_simulator, capture_on_commit) -> ActivationCase:
    """A case the core accepted (202) whose callback is lost."""
    core_simulator.configure(script=["pending"], callback_url="", callback_delay_seconds=0.1)
    case, request = submitted_case(customer, capture_on_commit)
    services.deliver_core_request(request_id=request.pk)
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_CONFIRMATION
    return case


def core_line_status(core_simulator, reference: str) -> str:
    return core_simulator.stats()["lines"].get(reference, {}).get("status", "")


def test_a_case_handed_to_staff_is_activated_when_the_core_had_finished_it_and_the_customer_is_told(
    customer, core_simulator, django_capture_on_commit_callbacks
):
    case = awaiting_case(customer, core_simulator, django_capture_on_commit_callbacks)
    reference = case.credit_line.reference
    # The core confirms the line, its callback is lost, and its reads are down past the SLA.
    core_simulator.configure(down=True)
    wait_until(lambda: core_line_status(core_simulator, reference) == "active", timeout=5)
    with (
        time_machine.travel(timezone.now() + timedelta(minutes=16)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.reconcile_activations()
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "sync_timeout")
    assert "our staff will" in LocmemBackend.outbox[-1]["body"]
    messages, events = len(LocmemBackend.outbox), CaseEvent.objects.filter(case=case).count()

    core_simulator.configure(down=False)
    with (
        time_machine.travel(timezone.now() + timedelta(minutes=17)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        counts = services.reconcile_activations()

    assert counts == {"polled": 1, "activated": 1, "escalated": 0, "unreachable": 0, "skipped": 0}
    case.refresh_from_db()
    assert case.state == CaseState.ACTIVATED
    assert case.credit_line.status == CreditLine.Status.ACTIVE
    # The customer, told staff would finish it, now hears that the line is active: one message.
    assert len(LocmemBackend.outbox) == messages + 1
    assert "is now active" in LocmemBackend.outbox[-1]["body"]
    # The timeline says what happened and why: a poll found the line active while in review.
    polled, changed = CaseEvent.objects.filter(case=case).order_by("seq")[events:]
    assert polled.kind == "core.polled"
    assert polled.data["found_by"] == "poll"
    assert polled.data["was_in_review_for"] == "sync_timeout"
    assert (changed.kind, changed.state_before, changed.state_after) == (
        "state.changed",
        CaseState.NEEDS_REVIEW,
        CaseState.ACTIVATED,
    )
    assert changed.data["was_in_review_for"] == "sync_timeout"
    assert CaseEvent.objects.filter(case=case).count() == events + 2
    assert CoreRequest.objects.filter(case=case).count() == 1  # nothing was sent again


def test_a_delivery_that_timed_out_but_reached_the_core_is_found_after_it_went_to_staff(
    customer, core_simulator, settings, django_capture_on_commit_callbacks
):
    settings.ACTIVATION_MAX_SUBMIT_ATTEMPTS = 1
    # The core activates the line but answers after our read timeout: outcome unknown to us.
    core_simulator.configure(script=["timeout"], timeout_seconds=1.5, callback_url="")
    settings.CORE_READ_TIMEOUT_SECONDS = 0.5
    case, request = submitted_case(customer, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        services.deliver_core_request(request_id=request.pk)
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "core_unavailable")
    assert core_line_status(core_simulator, case.credit_line.reference) == "active"

    with django_capture_on_commit_callbacks(execute=True):
        counts = services.reconcile_activations()

    assert (counts["polled"], counts["activated"]) == (1, 1)
    case.refresh_from_db()
    assert case.state == CaseState.ACTIVATED
    assert "is now active" in LocmemBackend.outbox[-1]["body"]
    assert core_simulator.stats()["activations"] == {case.credit_line.reference: 1}


def test_a_case_in_review_that_never_reached_the_core_is_not_polled(
    customer, core_simulator, settings, counted_core, django_capture_on_commit_callbacks
):
    client, transport = counted_core
    settings.ACTIVATION_MAX_SUBMIT_ATTEMPTS = 1
    core_simulator.configure(script=["error"])  # 503: not performed, but the row went out once
    _case, request = submitted_case(customer, django_capture_on_commit_callbacks)
    services.deliver_core_request(request_id=request.pk)
    # A case handed to staff for lock-outs never sent anything: the core has nothing to say.
    locked_out = CustomerFactory()
    other = _locked_out_case(locked_out, settings)

    counts = services.reconcile_activations(client=client)

    assert transport.calls == 1  # the 503 case only
    assert counts["polled"] == 1
    other.refresh_from_db()
    assert (other.state, other.failure_reason) == (CaseState.NEEDS_REVIEW, "too_many_attempts")


def _locked_out_case(customer, settings) -> ActivationCase:
    settings.VERIFICATION_LOCKOUTS_BEFORE_REVIEW = 1
    case = open_failed_case(customer)
    services.start_verification(case_id=case.pk, customer=customer)
    wrong = f"{(int(last_sms_code(str(customer.phone_number))) + 1) % 1_000_000:06d}"
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _attempt in range(settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE):
            services.verify_and_submit(case_id=case.pk, customer=customer, code=wrong)
            clock.shift(10)
    case.refresh_from_db()
    assert case.state == CaseState.NEEDS_REVIEW
    return case


def test_a_case_in_review_is_asked_about_at_most_once_per_interval(
    customer, core_simulator, settings, counted_core, django_capture_on_commit_callbacks
):
    client, transport = counted_core
    settings.ACTIVATION_MAX_SUBMIT_ATTEMPTS = 1
    settings.ACTIVATION_REVIEW_POLL_INTERVAL_SECONDS = 300
    core_simulator.configure(script=["error"])  # the core never activated it: still inactive
    case, request = submitted_case(customer, django_capture_on_commit_callbacks)
    services.deliver_core_request(request_id=request.pk)
    events = CaseEvent.objects.filter(case=case).count()

    services.reconcile_activations(client=client)
    services.reconcile_activations(client=client)
    assert transport.calls == 1
    with time_machine.travel(timezone.now() + timedelta(seconds=301)):
        services.reconcile_activations(client=client)
    assert transport.calls == 2

    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "core_unavailable")
    # An unchanged answer is not news: the timeline does not fill up with polls.
    assert CaseEvent.objects.filter(case=case).count() == events


def many_awaiting_cases(count, core_simulator, capture_on_commit) -> list[ActivationCase]:
    return [
        awaiting_case(CustomerFactory(), core_simulator, capture_on_commit) for _ in range(count)
    ]


def test_with_the_core_down_a_run_stops_early_and_an_open_breaker_skips_polling(
    core_simulator, settings, counted_core, django_capture_on_commit_callbacks
):
    client, transport = counted_core
    cases = many_awaiting_cases(8, core_simulator, django_capture_on_commit_callbacks)
    events = CaseEvent.objects.count()
    core_simulator.configure(down=True)

    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        first = services.reconcile_activations(client=client)
        assert transport.calls == settings.ACTIVATION_RECONCILE_MAX_CONSECUTIVE_UNREACHABLE == 3
        assert (first["unreachable"], first["skipped"]) == (3, 5)
        second = services.reconcile_activations(client=client)
        # The fifth failure in a row opens the core's breaker (threshold 5): the run stops there.
        assert transport.calls == settings.CORE_BREAKER_FAILURE_THRESHOLD == 5
        assert (second["unreachable"], second["skipped"]) == (2, 6)
        third = services.reconcile_activations(client=client)
        assert transport.calls == 5  # breaker open: no call at all
        assert (third["unreachable"], third["skipped"]) == (0, 8)

    assert {case.state for case in ActivationCase.objects.filter(pk__in=[c.pk for c in cases])} == {
        CaseState.AWAITING_CONFIRMATION
    }
    assert CaseEvent.objects.count() == events


@contextmanager
def unanswering_core(settings) -> Iterator[str]:
    """Point the core's URL at a port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        settings.CORE_API_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
        yield settings.CORE_API_URL


def test_a_run_against_a_core_that_never_answers_stays_within_its_time_budget(
    core_simulator, settings, django_capture_on_commit_callbacks
):
    cases = many_awaiting_cases(6, core_simulator, django_capture_on_commit_callbacks)
    settings.ACTIVATION_RECONCILE_BUDGET_SECONDS = 0.5
    settings.ACTIVATION_RECONCILE_MAX_CONSECUTIVE_UNREACHABLE = 100
    settings.CORE_BREAKER_FAILURE_THRESHOLD = 100
    settings.CORE_READ_TIMEOUT_SECONDS = 0.3
    settings.CORE_CONNECT_TIMEOUT_SECONDS = 0.3

    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        started = time.monotonic()
        with unanswering_core(settings):
            counts = services.reconcile_activations()
        elapsed = time.monotonic() - started

    # Reads start at 0, 0.3 s and perhaps 0.6 s; none starts after the budget.
    assert 1 <= counts["unreachable"] <= 2
    assert counts["skipped"] == len(cases) - counts["unreachable"]
    # The budget, one read's timeout begun just before it ends, and slack for a loaded machine.
    assert elapsed < settings.ACTIVATION_RECONCILE_BUDGET_SECONDS + 0.3 + 1.5
