"""Celery tasks: each takes ids, calls one service, and owns only its retry policy."""

from celery import shared_task
from django.conf import settings

from verification.delivery import DeliveryError

from . import services
from .integrity import verify_and_record
from .services.bulk_recovery import run_bulk_recovery as run_bulk_recovery_job
from .services.bulk_recovery import waiting_bulk_recovery_job_ids
from .services.notifications import notify_customer_of_resolution


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_core_request(request_id: int) -> None:
    """Deliver one outbox row; a duplicate message finds the row claimed and does nothing."""
    services.deliver_core_request(request_id=request_id)


@shared_task(ignore_result=True)
def sweep_core_outbox() -> int:
    """Re-enqueue every due outbox row, so a lost broker message only delays a request."""
    # The sweep is also the drain after a pause or an outage: at most the configured rate.
    interval = settings.CELERY_BEAT_SCHEDULE["sweep-core-outbox"]["schedule"]
    batch = max(1, int(settings.ACTIVATION_DRAIN_RATE_PER_MINUTE * interval / 60))
    request_ids = services.due_core_request_ids(limit=batch)
    for request_id in request_ids:
        deliver_core_request.delay(request_id)
    return len(request_ids)


@shared_task(ignore_result=True)
def reconcile_activations() -> dict[str, int]:
    """Poll the core for unconfirmed cases and escalate the overdue ones."""
    return services.reconcile_activations()


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=(DeliveryError,),
    retry_backoff=True,
    max_retries=5,
)
def notify_case_resolved(case_id: int) -> None:
    """Tell the customer their case is resolved; a gateway failure is retried with back-off."""
    notify_customer_of_resolution(case_id=case_id)


# Long jobs: a soft limit to stop cleanly, a hard one a little later.
LONG_JOB_LIMITS = {"soft_time_limit": 3300, "time_limit": 3600}


@shared_task(ignore_result=True, **LONG_JOB_LIMITS)
def verify_audit_chains() -> int:
    """Nightly: verify every chain and record the result on the audit trail."""
    return len(verify_and_record())


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, **LONG_JOB_LIMITS)
def run_bulk_recovery(job_id: int) -> None:
    """Carry out a bulk recovery; a redelivery after a lost worker resumes from its progress."""
    run_bulk_recovery_job(job_id=job_id)


@shared_task(ignore_result=True)
def sweep_bulk_recovery_jobs() -> int:
    """Queue again a bulk recovery whose task the broker lost; the job's row lock makes a
    duplicate wait and then find nothing left to do."""
    job_ids = waiting_bulk_recovery_job_ids()
    for job_id in job_ids:
        run_bulk_recovery.delay(job_id)
    return len(job_ids)
