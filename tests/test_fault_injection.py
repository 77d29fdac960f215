"""Festival peak on a bad day: a flaky core, lost and reordered callbacks, a crashed worker.

200 customers retry at once against real PostgreSQL and Redis, two Celery workers, Celery beat
and the simulator at 30 % errors, 10 % timeouts, half the callbacks lost and a fifth duplicated
and reordered. Mid-run one worker is killed with SIGKILL and restarted, and the core goes down
for a while. Afterwards every case is settled, no line was activated twice, nothing is left in
flight, and every timeline verifies.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from activation import services
from activation.models import ActivationCase, CaseState, CoreRequest
from activation.timeline import find_case_chain_break
from verification.sms import LocmemBackend

from .factories import CustomerFactory, open_failed_case
from .processes import portal_env, start_beat, start_simulator, start_worker
from .test_integration import broker  # noqa: F401 - the real-broker fixture

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

CASES = 200
SETTLED = (CaseState.ACTIVATED, CaseState.NEEDS_REVIEW)


def retry(customer_id: int, case_id: int) -> None:
    """One customer's retry, as the retry page does it, on this thread's own connection."""
    try:
        customer = CustomerFactory._meta.model.objects.get(pk=customer_id)
        services.start_verification(case_id=case_id, customer=customer)
        phone = str(customer.phone_number)
        code = next(m["body"] for m in reversed(LocmemBackend.outbox) if m["to"] == phone).split(
            "code is "
        )[1][:6]
        services.verify_and_submit(case_id=case_id, customer=customer, code=code)
    finally:
        connections.close_all()


def test_no_retry_is_lost_and_no_line_is_activated_twice(
    live_server,
    tmp_path,
    broker,  # noqa: F811
):
    sim_process, simulator = start_simulator(
        tmp_path,
        "--error-rate=0.3",
        "--timeout-rate=0.1",
        "--timeout-seconds=1.5",
        "--pending-rate=0.5",
        "--callback-delay-seconds=0.5",
        "--callback-loss-rate=0.5",
        "--callback-duplicate-rate=0.2",
        "--callback-reorder-rate=0.2",
        f"--callback-url={live_server.url}/api/v1/core/events/",
    )
    env = portal_env(
        CORE_API_URL=simulator.url,
        CORE_READ_TIMEOUT_SECONDS="1",
        CORE_BREAKER_FAILURE_THRESHOLD="8",
        CORE_BREAKER_RESET_SECONDS="2",
        ACTIVATION_RETRY_BASE_SECONDS="0.3",
        ACTIVATION_RETRY_MAX_SECONDS="3",
        ACTIVATION_MAX_SUBMIT_ATTEMPTS="10",
        ACTIVATION_DELIVERY_LEASE_SECONDS="5",
        ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS="2",
        ACTIVATION_SWEEP_INTERVAL_SECONDS="1",
        ACTIVATION_RECONCILE_INTERVAL_SECONDS="2",
        ACTIVATION_DRAIN_RATE_PER_MINUTE="6000",
    )
    processes = [start_worker(tmp_path, "worker0", env), start_worker(tmp_path, "worker1", env)]
    processes.append(start_beat(tmp_path, env))
    try:
        cases = [open_failed_case(CustomerFactory()) for _ in range(CASES)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            retries = [pool.submit(retry, case.credit_line.customer_id, case.pk) for case in cases]
            time.sleep(1.0)
            processes[0].kill()  # SIGKILL mid-run: whatever it held in flight is abandoned
        for submitted in retries:
            submitted.result()  # every retry request itself succeeded
        time.sleep(2.0)
        processes.append(start_worker(tmp_path, "worker0-restarted", env))
        simulator.configure(down=True)  # the core goes down for a while
        time.sleep(4.0)
        simulator.configure(down=False)

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            unsettled = ActivationCase.objects.exclude(state__in=SETTLED).count()
            busy = CoreRequest.objects.filter(
                status__in=[CoreRequest.Status.PENDING, CoreRequest.Status.IN_FLIGHT]
            ).count()
            if unsettled == 0 and busy == 0:
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            process.stop()
        sim_stats = simulator.stats()
        sim_process.stop()

    states = dict.fromkeys(SETTLED, 0)
    for state in ActivationCase.objects.values_list("state", flat=True):
        states[state] = states.get(state, 0) + 1
    print(f"settled in {elapsed:.1f} s: {states}; core saw {sim_stats['requests']} requests")

    assert ActivationCase.objects.count() == CASES
    assert set(states) == set(SETTLED), states
    assert states[CaseState.ACTIVATED] > CASES * 0.8, states
    assert not [ref for ref, count in sim_stats["activations"].items() if count > 1]
    assert not CoreRequest.objects.filter(status=CoreRequest.Status.IN_FLIGHT).exists()
    assert CoreRequest.objects.filter(status=CoreRequest.Status.PENDING).count() == 0
    # What the portal says is active is what the core says is active.
    activated = set(
        ActivationCase.objects.filter(state=CaseState.ACTIVATED).values_list(
            "credit_line__reference", flat=True
        )
    )
    core_active = {ref for ref, line in sim_stats["lines"].items() if line["status"] == "active"}
    assert activated <= core_active
    assert [case.pk for case in cases if find_case_chain_break(case.pk)] == []
