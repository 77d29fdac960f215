"""Every periodic task run twice at once, as two beats (or a backlog of queued runs) would.

Exactly one beat sends periodic tasks (tests/test_one_beat.py), but for a moment two may, and
runs queued while the workers were down are taken by several workers together. Each test starts
two runs of one task in two threads, released together, each on its own PostgreSQL connection,
and checks that the outcome is that of one run: nothing delivered to the core twice, no case
escalated twice, no timeline event doubled, purges that count what they deleted.
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import time_machine
from django.conf import settings
from django.db import connections
from django.utils import timezone
from prometheus_client import REGISTRY

from activation import services
from activation.models import (
    ActivationCase,
    CaseEvent,
    CaseState,
    CoreRequest,
    FailureReason,
)
from activation.services.bulk_recovery import start_bulk_recovery
from activation.tasks import (
    reconcile_activations,
    sweep_bulk_recovery_jobs,
    sweep_core_outbox,
    verify_audit_chains,
)
from activation.timeline import find_case_chain_break
from api.models import IdempotencyRecord
from api.tasks import purge_idempotency_keys
from audit.models import SystemEvent
from audit.services import find_system_chain_break
from portal.celery import app as celery_app
from portal.heartbeat import worker_heartbeat_age_seconds
from portal.tasks import stamp_worker_heartbeat
from risk.models import Evaluation, FiredRule, Moment, Rule
from risk.tasks import purge_evaluations
from risk.tests.conftest import load_default_rule_set

from .factories import CustomerFactory, StaffFactory, open_failed_case, open_review_case
from .fixtures import last_sms_code

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def at_once(run: Callable[[], Any], times: int = 2) -> list[Any]:
    """Run ``run`` in ``times`` threads released together; return what each returned.

    The tests read a task's ``apply().result``: ``.get()`` refuses to wait while any thread of
    the process runs a task (Celery's guard against waiting inside a task is process-wide).
    """
    start = threading.Barrier(times)
    results: list[Any] = [None] * times
    errors: list[BaseException] = []

    def thread_body(index: int) -> None:
        try:
            start.wait(timeout=10)
            results[index] = run()
        except BaseException as error:  # re-raised below, in the test's own thread
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=thread_body, args=(index,)) for index in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a run did not finish"
    if errors:
        raise errors[0]
    return results


@contextmanager
def broker_loses_messages() -> Iterator[None]:
    """Queue tasks on the test's Redis broker, where no worker listens, and lose them there."""
    celery_app.conf.task_always_eager = False
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = True
        redis.Redis.from_url(settings.TEST_REDIS_URL).flushdb()


def verify(case: ActivationCase) -> None:
    """The customer asks for a code and enters it, through the services, as the retry page does."""
    customer = case.credit_line.customer
    services.start_verification(case_id=case.pk, customer=customer)
    code = last_sms_code(str(customer.phone_number))
    services.verify_and_submit(case_id=case.pk, customer=customer, code=code)


def events(case: ActivationCase, kind: str) -> list[CaseEvent]:
    return list(CaseEvent.objects.filter(case=case, kind=kind).order_by("seq"))


def core_reads_answered() -> float:
    return (
        REGISTRY.get_sample_value("activation_rescue_core_requests_total", {"status_class": "2xx"})
        or 0.0
    )


# --- sweep-core-outbox ----------------------------------------------------------------------


@pytest.mark.redis
def test_two_outbox_sweeps_at_once_deliver_each_due_request_once(core_simulator):
    cases = [open_failed_case(CustomerFactory()) for _ in range(8)]
    with broker_loses_messages():  # every delivery message is lost: only the sweep finds them
        for case in cases:
            verify(case)
    requests = {request.case_id: request for request in CoreRequest.objects.all()}
    assert {request.status for request in requests.values()} == {CoreRequest.Status.PENDING}

    at_once(lambda: sweep_core_outbox.apply().result)

    stats = core_simulator.stats()
    assert stats["requests_by_key"] == {str(r.idempotency_key): 1 for r in requests.values()}
    assert stats["activations"] == {case.credit_line.reference: 1 for case in cases}
    for case in cases:
        case.refresh_from_db()
        assert case.state == CaseState.ACTIVATED
        assert len(events(case, "core.response")) == 1
        assert find_case_chain_break(case.pk) is None
    assert set(CoreRequest.objects.values_list("status", "attempts")) == {
        (CoreRequest.Status.SUCCEEDED, 1)
    }


# --- reconcile-activations ------------------------------------------------------------------


def awaiting_confirmation(at) -> ActivationCase:
    """A case the core accepted (202) at ``at`` and never confirmed."""
    with time_machine.travel(at, tick=True):
        case = open_failed_case(CustomerFactory())
        verify(case)  # delivered at once (tasks run eagerly): 202
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_CONFIRMATION
    return case


def test_two_reconciliations_at_once_poll_each_case_once_and_escalate_it_once(core_simulator):
    # The core accepts, and never confirms (its callback would come in an hour, to nowhere).
    core_simulator.configure(pending_rate=1.0, callback_url="", callback_delay_seconds=3600)
    # The runs start early in a poll period (half the reconcile interval), not across two.
    period = settings.CELERY_BEAT_SCHEDULE["reconcile-activations"]["schedule"] / 2
    now = timezone.now().timestamp()
    run_at = datetime.fromtimestamp((now // period + 1) * period + 1, tz=UTC)
    waiting = [awaiting_confirmation(run_at - timedelta(minutes=5)) for _ in range(3)]
    overdue = [awaiting_confirmation(run_at - timedelta(minutes=20)) for _ in range(2)]
    reads_before = core_reads_answered()

    with time_machine.travel(run_at, tick=True):
        runs = at_once(lambda: reconcile_activations.apply().result)
        # A third run right after (a backlog taken by a free worker) finds nothing to ask about.
        after = reconcile_activations.apply().result

    assert sum(run["polled"] for run in runs) == 5
    assert sum(run["escalated"] for run in runs) == 2
    assert (after["polled"], after["escalated"]) == (0, 0)
    assert core_reads_answered() - reads_before == 5  # each case asked about once
    for case in waiting + overdue:
        case.refresh_from_db()
        assert len(events(case, "core.polled")) == 1, case.pk
        assert find_case_chain_break(case.pk) is None
    assert {case.state for case in waiting} == {CaseState.AWAITING_CONFIRMATION}
    for case in overdue:
        assert (case.state, case.failure_reason) == (
            CaseState.NEEDS_REVIEW,
            FailureReason.SYNC_TIMEOUT,
        )
        escalations = [
            event
            for event in events(case, "state.changed")
            if event.state_after == CaseState.NEEDS_REVIEW
        ]
        assert len(escalations) == 1


# --- sweep-bulk-recovery-jobs ---------------------------------------------------------------


@pytest.mark.redis
def test_two_bulk_recovery_sweeps_at_once_carry_out_a_lost_job_once(core_simulator, settings):
    settings.ACTIVATION_BULK_RECOVERY_BATCH_SIZE = 2
    supervisor = StaffFactory(role="supervisor")
    now = timezone.now()
    with time_machine.travel(now - timedelta(minutes=10), tick=True):
        cases = [open_review_case(reason=FailureReason.CORE_UNAVAILABLE) for _ in range(5)]
    with time_machine.travel(now - timedelta(minutes=2), tick=True), broker_loses_messages():
        job = start_bulk_recovery(
            staff=supervisor,
            since=now - timedelta(hours=1),
            until=now - timedelta(minutes=2),
            reason="core outage this morning",
        )

    sent = at_once(lambda: sweep_bulk_recovery_jobs.apply().result)

    assert 1 <= sum(sent) <= 2  # the second sweep may find the job already running
    job.refresh_from_db()
    assert (job.status, job.total, job.resubmitted, job.skipped) == ("done", 5, 5, 0)
    assert SystemEvent.objects.filter(kind="cases.bulk_recovered").count() == 1
    stats = core_simulator.stats()
    assert stats["activations"] == {case.credit_line.reference: 1 for case in cases}
    assert sorted(stats["requests_by_key"].values()) == [1] * 5
    for case in cases:
        case.refresh_from_db()
        assert case.state == CaseState.ACTIVATED
        assert CoreRequest.objects.filter(case=case).count() == 1
        resubmissions = [
            event
            for event in events(case, "state.changed")
            if event.state_after == CaseState.SUBMITTING
        ]
        assert len(resubmissions) == 1
        assert find_case_chain_break(case.pk) is None


# --- verify-audit-chains --------------------------------------------------------------------


def test_two_chain_verifications_at_once_each_record_a_true_result_on_an_intact_trail():
    cases = [open_failed_case(CustomerFactory()) for _ in range(3)]
    trail_before = SystemEvent.objects.count()

    problems = at_once(lambda: verify_audit_chains.apply().result)

    assert problems == [0, 0]
    verified = list(SystemEvent.objects.filter(kind="audit.verified").order_by("seq"))
    # Two records, each of a complete check that really ran, one after the other on the trail.
    assert [event.data for event in verified] == [
        {"cases_checked": len(cases), "ok": True, "problems": []}
    ] * 2
    assert verified[1].seq == verified[0].seq + 1
    assert SystemEvent.objects.count() == trail_before + 2
    assert find_system_chain_break() is None


# --- purge-risk-evaluations -----------------------------------------------------------------


def test_two_evaluation_purges_at_once_delete_each_old_evaluation_once_and_count_it_once():
    load_default_rule_set()  # a transactional test's flush may have taken it
    rule = Rule.objects.filter(version__number=1).first()
    customer = CustomerFactory()
    old = timezone.now() - timedelta(days=settings.RISK_EVALUATION_RETENTION_DAYS + 1)
    # More than one batch (2,000) of old evaluations, each with a fired rule, and a few to keep.
    evaluations = Evaluation.objects.bulk_create(
        [
            Evaluation(
                moment=Moment.SIGN_IN,
                customer=customer,
                decision="allow",
                created_at=old if index < 4500 else timezone.now(),
            )
            for index in range(4510)
        ]
    )
    FiredRule.objects.bulk_create(
        [FiredRule(evaluation=e, rule=rule, score=rule.score) for e in evaluations]
    )

    purged = at_once(lambda: purge_evaluations.apply().result)

    assert sum(purged) == 4500, purged  # both runs' counts together: each deletion once
    assert Evaluation.objects.count() == 10
    assert FiredRule.objects.count() == 10
    assert not Evaluation.objects.filter(created_at__lte=old).exists()


# --- purge-idempotency-keys -----------------------------------------------------------------


def test_two_idempotency_key_purges_at_once_delete_each_expired_key_once():
    customer = CustomerFactory()
    now = timezone.now()
    IdempotencyRecord.objects.bulk_create(
        [
            IdempotencyRecord(
                user=customer,
                key=f"key-{index}",
                endpoint="POST /api/v1/things/",
                request_hash="0" * 64,
                status_code=201,
                response_body={},
                expires_at=now - timedelta(minutes=1) if index < 300 else now + timedelta(hours=1),
            )
            for index in range(310)
        ]
    )

    purged = at_once(lambda: purge_idempotency_keys.apply().result)

    assert sum(purged) == 300, purged
    assert IdempotencyRecord.objects.count() == 10
    assert not IdempotencyRecord.objects.filter(expires_at__lte=now).exists()


# --- stamp-worker-heartbeat -----------------------------------------------------------------


def test_two_heartbeat_stamps_at_once_leave_one_fresh_stamp():
    at_once(lambda: stamp_worker_heartbeat.apply().result)

    age = worker_heartbeat_age_seconds()
    assert age is not None and age < 5
