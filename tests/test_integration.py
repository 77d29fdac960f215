"""A real Celery worker process on Redis and PostgreSQL carries a retry to a real simulator."""

import re
from datetime import datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from activation import services
from activation.models import (
    BulkRecoveryJob,
    CaseEvent,
    CaseState,
    CoreRequest,
    FailureReason,
)
from activation.services.bulk_recovery import start_bulk_recovery
from activation.tasks import sweep_core_outbox
from activation.timeline import find_case_chain_break
from portal.celery import app as celery_app

from .factories import CustomerFactory, open_failed_case, open_review_case
from .fixtures import last_sms_code, wait_until
from .processes import Process, database_url, portal_env, start_simulator, start_worker

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def broker():
    """Publish to the real Redis broker instead of running tasks eagerly."""
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    client.flushdb()
    celery_app.conf.task_always_eager = False
    yield client
    celery_app.conf.task_always_eager = True
    client.flushdb()


@pytest.fixture
def simulator(live_server, tmp_path):
    process, simulator = start_simulator(
        tmp_path,
        "--pending-rate=1.0",
        "--callback-delay-seconds=0.5",
        "--timeout-seconds=2",
        f"--callback-url={live_server.url}/api/v1/core/events/",
    )
    yield simulator
    process.stop()


@pytest.fixture
def worker_env(simulator, broker):
    return portal_env(
        CORE_API_URL=simulator.url,
        CORE_READ_TIMEOUT_SECONDS="1",
        ACTIVATION_RETRY_BASE_SECONDS="0.2",
        ACTIVATION_RETRY_MAX_SECONDS="1",
    )


@pytest.fixture
def workers(tmp_path, worker_env):
    started: list[Process] = []

    def start() -> Process:
        started.append(start_worker(tmp_path, f"worker{len(started)}", worker_env))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def submit_retry(customer, case) -> CoreRequest:
    services.start_verification(case_id=case.pk, customer=customer)
    services.verify_and_submit(case_id=case.pk, customer=customer, code=last_sms_code())
    return CoreRequest.objects.get(case=case)


def wait_for_state(case, state: str, worker: Process) -> None:
    def settled() -> bool:
        case.refresh_from_db()
        return case.state == state

    try:
        wait_until(settled, timeout=60, what=f"case {case.pk} to become {state}")
    except AssertionError:
        print(worker.output())
        raise


def test_a_worker_carries_a_retry_through_failures_to_a_confirmed_activation(workers, simulator):
    worker = workers()
    simulator.configure(script=["error", "error", "pending"])
    customer = CustomerFactory()
    case = open_failed_case(customer)

    request = submit_retry(customer, case)

    wait_for_state(case, CaseState.ACTIVATED, worker)
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.SUCCEEDED, 3)
    stats = simulator.stats()
    assert stats["activations"] == {case.credit_line.reference: 1}
    assert stats["requests_by_key"] == {str(request.idempotency_key): 3}
    kinds = list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
    assert kinds.count("core.response") == 3
    assert "core.callback" in kinds
    assert find_case_chain_break(case.pk) is None


def test_a_lost_broker_message_is_delivered_by_the_sweeper(workers, simulator, broker):
    simulator.configure(pending_rate=0.0)
    customer = CustomerFactory()
    case = open_failed_case(customer)
    request = submit_retry(customer, case)
    broker.flushdb()  # the broker lost the delivery message
    worker = workers()

    sweep_core_outbox.delay()

    wait_for_state(case, CaseState.ACTIVATED, worker)
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.SUCCEEDED, 1)
    assert simulator.stats()["activations"] == {case.credit_line.reference: 1}


WORKER_APPLICATION_NAME = "celery-worker-under-test"


@pytest.fixture
def named_worker(tmp_path, broker):
    """A worker whose database connections carry a name we can find in pg_stat_activity."""
    url = f"{database_url()}?application_name={WORKER_APPLICATION_NAME}"
    worker = start_worker(tmp_path, "worker", portal_env(DATABASE_URL=url))
    yield worker
    worker.stop()


def worker_backends() -> list[tuple[int, datetime]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s",
            [WORKER_APPLICATION_NAME],
        )
        return cursor.fetchall()


def finished_sweeps(worker: Process) -> list[str]:
    return re.findall(r"sweep_core_outbox\[[^\]]+\] (succeeded|raised)", worker.output())


def sweep(worker: Process, times: int) -> None:
    """Run the sweeper ``times`` more times on the worker and wait until each has succeeded."""
    before = len(finished_sweeps(worker))
    for _ in range(times):
        sweep_core_outbox.delay()

    def all_succeeded() -> bool:
        ends = finished_sweeps(worker)
        assert "raised" not in ends, worker.output()
        return len(ends) >= before + times

    wait_until(all_succeeded, timeout=30, what=f"{times} sweeps")


def test_a_worker_keeps_its_database_connections_from_task_to_task(named_worker):
    """A new PostgreSQL backend per task cost a fifth of a worker's CPU under a surge."""
    sweep(named_worker, 3)
    first = worker_backends()
    sweep(named_worker, 6)
    after = worker_backends()
    # The worker's two processes each opened a connection once and still hold it.
    assert 1 <= len(first) <= 2
    assert set(first) <= set(after)
    assert len(after) <= 2


def test_a_worker_whose_connections_died_reconnects_without_failing_a_task(named_worker):
    sweep(named_worker, 2)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [WORKER_APPLICATION_NAME],
        )
    wait_until(lambda: not worker_backends(), timeout=10, what="the connections to end")
    sweep(named_worker, 4)  # would fail the first task of each process without health checks
    assert worker_backends()


def test_a_worker_carries_out_a_bulk_recovery_with_a_small_batch_size(
    workers, worker_env, supervisor
):
    worker_env["ACTIVATION_BULK_RECOVERY_BATCH_SIZE"] = "2"
    worker = workers()
    cases = [open_review_case(reason=FailureReason.CORE_UNAVAILABLE) for _ in range(5)]
    job = start_bulk_recovery(
        staff=supervisor,
        since=timezone.now() - timedelta(hours=1),
        until=timezone.now(),  # a window may not end in the future
        reason="after the outage",
    )

    def done() -> bool:
        job.refresh_from_db()
        return job.status == BulkRecoveryJob.Status.DONE

    try:
        wait_until(done, timeout=60, what="the bulk recovery job")
    except AssertionError:
        print(worker.output())
        raise
    assert (job.total, job.processed, job.resubmitted, job.skipped) == (5, 5, 5, 0)
    assert CoreRequest.objects.filter(case__in=cases).count() == 5
    assert "run_bulk_recovery" in worker.output()
