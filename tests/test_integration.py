"""A real Celery worker process on Redis and PostgreSQL carries a retry to a real simulator."""

import os
import re

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
from .fixtures import Process, RunningSimulator, free_port, last_sms_code, python, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_", "CELERY_"))}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def simulator_process(live_server, tmp_path):
    port = free_port()
    process = Process(
        [
            python(),
            "manage.py",
            "run_core_simulator",
            f"--port={port}",
            "--pending-rate=1.0",
            "--callback-delay-seconds=0.5",
            "--timeout-seconds=2",
            f"--callback-url={live_server.url}/api/v1/core/events/",
        ],
        base_env(),
        "simulator",
        tmp_path,
    )
    wait_until(lambda: "listening" in process.output(), timeout=30, what="the simulator")
    yield RunningSimulator(f"http://127.0.0.1:{port}")
    process.stop()


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
def start_worker(tmp_path, simulator_process, broker):
    processes = []

    def start() -> Process:
        process = Process(
            [
                python(),
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--concurrency=2",
                "--without-mingle",
                "--without-gossip",
                "--loglevel=INFO",
            ],
            base_env(
                DATABASE_URL=database_url(),
                CELERY_BROKER_URL=settings.TEST_REDIS_URL,
                CORE_API_URL=simulator_process.url,
                CORE_READ_TIMEOUT_SECONDS="1",
                ACTIVATION_RETRY_BASE_SECONDS="0.2",
                ACTIVATION_RETRY_MAX_SECONDS="1",
                SMS_BACKEND="verification.sms.ConsoleBackend",
            ),
            f"worker{len(processes)}",
            tmp_path,
        )
        processes.append(process)
        wait_until(lambda: re.search(r"ready\.", process.output()), timeout=60, what="the worker")
        return process

    yield start
    for process in processes:
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


def test_a_worker_carries_a_retry_through_failures_to_a_confirmed_activation(
    start_worker, simulator_process
):
    worker = start_worker()
    simulator_process.configure(script=["error", "error", "pending"])
    customer = CustomerFactory()
    case = open_failed_case(customer)

    request = submit_retry(customer, case)

    wait_for_state(case, CaseState.ACTIVATED, worker)
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.SUCCEEDED, 3)
    stats = simulator_process.stats()
    assert stats["activations"] == {case.credit_line.reference: 1}
    assert stats["requests_by_key"] == {str(request.idempotency_key): 3}
    kinds = list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
    assert kinds.count("core.response") == 3
    assert "core.callback" in kinds
    assert find_case_chain_break(case.pk) is None


def test_a_lost_broker_message_is_delivered_by_the_sweeper(start_worker, simulator_process, broker):
    simulator_process.configure(pending_rate=0.0)
    customer = CustomerFactory()
    case = open_failed_case(customer)
    request = submit_retry(customer, case)
    broker.flushdb()  # the broker lost the delivery message
    worker = start_worker()

    sweep_core_outbox.delay()

    wait_for_state(case, CaseState.ACTIVATED, worker)
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.SUCCEEDED, 1)
    assert simulator_process.stats()["activations"] == {case.credit_line.reference: 1}
