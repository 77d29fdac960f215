"""A real Celery worker process on Redis and PostgreSQL carries a retry to a real simulator."""

from datetime import datetime

import pytest
import redis
from django.conf import settings
from django.db import connection

from activation import services
from activation.models import CaseEvent, CaseState, CoreRequest
from activation.tasks import sweep_core_outbox
from activation.timeline import find_case_chain_break
from portal.celery import app as celery_app

from .factories import CustomerFactory, open_failed_case
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


def test_a_worker_keeps_its_database_connections_from_task_to_task(tmp_path, broker):
    """A new PostgreSQL backend per task cost a third of a worker's CPU under a surge."""
    name = "worker-connection-reuse"
    worker = start_worker(
        tmp_path,
        "worker",
        portal_env(DATABASE_URL=f"{database_url()}?application_name={name}"),
    )

    def backends() -> list[tuple[int, datetime]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s",
                [name],
            )
            return cursor.fetchall()

    def sweeps_done(count: int) -> bool:
        return worker.output().count("sweep_core_outbox") >= 2 * count  # received, succeeded

    try:
        for _ in range(3):
            sweep_core_outbox.delay()
        wait_until(lambda: sweeps_done(3), timeout=30, what="three sweeps")
        first = backends()
        for _ in range(6):
            sweep_core_outbox.delay()
        wait_until(lambda: sweeps_done(9), timeout=30, what="nine sweeps")
        after = backends()
    finally:
        worker.stop()
    # The worker's two processes each opened a connection once and still hold it.
    assert 1 <= len(first) <= 2
    assert set(first) <= set(after)
    assert len(after) <= 2
