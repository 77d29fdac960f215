"""Celery tasks for the API: each calls one service."""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from .idempotency import purge_expired_records


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def purge_idempotency_keys() -> int | None:
    """Hourly: delete idempotency keys past ``API_IDEMPOTENCY_KEY_HOURS``."""
    try:
        return purge_expired_records()
    except SoftTimeLimitExceeded:
        return None  # the batches deleted so far stay deleted; the next run goes on
