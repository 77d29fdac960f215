import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from activation import services
from activation.core.client import ActivationResult, Outcome
from activation.models import CaseEvent, CaseState, CoreRequest, CreditLine, FailureReason
from activation.services.outbox import _claim_core_request as claim_core_request
from activation.tasks import sweep_core_outbox
from activation.timeline import find_case_chain_break

from .helpers import submitted_case

pytestmark = pytest.mark.django_db


@pytest.fixture
def submission(customer, django_capture_on_commit_callbacks):
    return submitted_case(customer, django_capture_on_commit_callbacks)


def test_verifying_writes_the_outbox_row_with_the_state_change(submission):
    case, request = submission
    assert case.state == CaseState.SUBMITTING
    assert request.status == CoreRequest.Status.PENDING
    assert request.payload["credit_line_ref"] == case.credit_line.reference
    assert request.payload["requested_by"] == "customer"
    kinds = list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
    assert kinds == [
        "case.opened",
        "state.changed",
        "risk.evaluated",
        "verification.sent",
        "risk.evaluated",
        "verification.succeeded",
        "state.changed",
    ]


def test_a_503_then_a_timeout_then_success_reuses_one_key_and_activates_once(
    submission, core_simulator, settings, django_capture_on_commit_callbacks
):
    settings.CORE_READ_TIMEOUT_SECONDS = 0.5
    core_simulator.configure(script=["error", "timeout"], timeout_seconds=1.0)
    case, request = submission
    with time_machine.travel(timezone.now(), tick=True) as clock:
        for _attempt in range(3):
            with django_capture_on_commit_callbacks(execute=False):
                assert services.deliver_core_request(request_id=request.pk)
            clock.shift(settings.ACTIVATION_RETRY_MAX_SECONDS)

    request.refresh_from_db()
    case.refresh_from_db()
    assert core_simulator.stats()["requests_by_key"] == {str(request.idempotency_key): 3}
    assert (request.status, request.attempts) == (CoreRequest.Status.SUCCEEDED, 3)
    assert case.state == CaseState.ACTIVATED
    assert case.credit_line.status == CreditLine.Status.ACTIVE
    # The timed-out attempt did activate the line in the core; the retry was answered as a replay.
    assert core_simulator.stats()["activations"] == {case.credit_line.reference: 1}
    responses = CaseEvent.objects.filter(case=case, kind="core.response").order_by("seq")
    assert [e.data["status_code"] for e in responses] == [503, None, 200]
    assert find_case_chain_break(case.pk) is None


def test_a_retry_is_not_sent_before_its_back_off_runs_out(submission, core_simulator):
    core_simulator.configure(script=["error"])
    _case, request = submission
    assert services.deliver_core_request(request_id=request.pk)
    assert services.deliver_core_request(request_id=request.pk) is False
    request.refresh_from_db()
    assert request.attempts == 1
    assert request.next_attempt_at > timezone.now()
    assert core_simulator.stats()["requests"] == 1


def test_a_busy_core_is_not_retried_before_retry_after(submission, settings):
    _case, request = submission
    claim_core_request(request.pk)
    busy = ActivationResult(Outcome.BUSY, status_code=429, retry_after_seconds=120)
    services.record_core_result(request_id=request.pk, attempt=1, result=busy)
    request.refresh_from_db()
    assert request.next_attempt_at >= timezone.now() + timedelta(seconds=119)


def test_after_the_last_attempt_the_case_goes_to_review(submission, settings):
    settings.ACTIVATION_MAX_SUBMIT_ATTEMPTS = 2
    case, request = submission
    down = ActivationResult(Outcome.UNAVAILABLE, error="HTTP 503", status_code=503)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for attempt in (1, 2):
            assert claim_core_request(request.pk) is not None
            services.record_core_result(request_id=request.pk, attempt=attempt, result=down)
            clock.shift(settings.ACTIVATION_RETRY_MAX_SECONDS)
    case.refresh_from_db()
    request.refresh_from_db()
    assert request.status == CoreRequest.Status.FAILED
    assert (case.state, case.failure_reason) == (
        CaseState.NEEDS_REVIEW,
        FailureReason.CORE_UNAVAILABLE,
    )


def test_a_rejection_goes_to_review_with_the_cores_reason(submission, core_simulator):
    core_simulator.configure(script=["reject"], reject_reason="kyc_expired")
    case, request = submission
    services.deliver_core_request(request_id=request.pk)
    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.failure_detail) == (
        CaseState.NEEDS_REVIEW,
        FailureReason.CORE_REJECTED,
        "kyc_expired",
    )
    assert core_simulator.stats()["activations"] == {}


def test_a_202_waits_for_confirmation(submission, core_simulator):
    core_simulator.configure(script=["pending"], callback_url="")
    case, request = submission
    services.deliver_core_request(request_id=request.pk)
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_CONFIRMATION
    assert case.credit_line.status == CreditLine.Status.PENDING
    assert case.failure_reason == ""


def test_a_late_answer_after_another_delivery_took_over_is_ignored(submission):
    case, request = submission
    with time_machine.travel(timezone.now(), tick=False) as clock:
        claim_core_request(request.pk)
        clock.shift(61)  # the lease ran out: the worker is presumed dead
        claim_core_request(request.pk)
        events_before = CaseEvent.objects.filter(case=case).count()
        late = ActivationResult(Outcome.UNAVAILABLE, error="timeout")
        services.record_core_result(request_id=request.pk, attempt=1, result=late)
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.IN_FLIGHT, 2)
    assert CaseEvent.objects.filter(case=case).count() == events_before


def test_the_sweeper_delivers_due_and_abandoned_rows_only(submission):
    _case, request = submission
    # Nothing listens at the configured core: each delivery fails and is rescheduled.
    assert sweep_core_outbox() == 1
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.PENDING, 1)
    assert sweep_core_outbox() == 0  # backing off

    with time_machine.travel(request.next_attempt_at + timedelta(seconds=1), tick=False) as clock:
        claim_core_request(request.pk)  # a worker takes it, then dies
        assert sweep_core_outbox() == 0  # its lease still runs
        clock.shift(settings.ACTIVATION_DELIVERY_LEASE_SECONDS)
        assert sweep_core_outbox() == 1
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.PENDING, 3)


def test_the_simulator_turns_away_what_exceeds_its_capacity(core_simulator, settings):
    core_simulator.configure(capacity=1, latency_ms=300, retry_after_seconds=7)

    def activate(n: int) -> httpx.Response:
        return httpx.post(
            f"{core_simulator.url}/v1/activations",
            json={"credit_line_ref": f"CL-CAP-{n}", "customer_ref": f"C-{n}"},
            headers={
                "Authorization": f"Bearer {settings.CORE_API_TOKEN}",
                "Idempotency-Key": str(uuid.uuid4()),
            },
            timeout=5,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(activate, range(3)))
    busy = [answer for answer in answers if answer.status_code == 429]
    assert busy and len(busy) < 3
    assert all(answer.headers["Retry-After"] == "7" for answer in busy)
    stats = core_simulator.stats()
    assert stats["turned_away"] == len(busy)
    assert stats["requests"] == 3 - len(busy)
