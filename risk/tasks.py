"""Celery tasks for the risk checkpoint: each calls one service."""

from celery import shared_task

from .services.retention import purge_old_evaluations


@shared_task(ignore_result=True, soft_time_limit=3300, time_limit=3600)
def purge_evaluations() -> int:
    """Nightly: drop evaluations past their retention (see ``RISK_EVALUATION_RETENTION_DAYS``)."""
    return purge_old_evaluations()
