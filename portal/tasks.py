"""Celery tasks of the project itself (the apps keep theirs in their own ``tasks.py``)."""

from celery import shared_task

from .heartbeat import stamp_worker_heartbeat as stamp


@shared_task(ignore_result=True)
def stamp_worker_heartbeat() -> None:
    """Stamp the worker heartbeat; beat queues this every 30 s."""
    stamp()
