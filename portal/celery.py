"""The Celery application; its settings live in ``portal.settings`` under ``CELERY_``."""

import os
from typing import Any

from celery import Celery, Task, states
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Celery's Django fix-up closes the database connection before and after every task, so every
# task paid for a new PostgreSQL backend (connect, authenticate, cold caches): a fifth of a
# worker's CPU per delivery in the surge benchmark. Workers instead keep connections the way
# Django keeps them across requests (CONN_MAX_AGE, CONN_HEALTH_CHECKS), and drop them after any
# task that failed. The fix-up's own closing is switched off by a reuse count no worker reaches.
app.conf.update(CELERY_DB_REUSE_MAX=2**62)


@task_prerun.connect
def _before_task(*, task: Task, **_kwargs: Any) -> None:
    if not task.request.is_eager:
        from django.db import close_old_connections

        close_old_connections()


@task_postrun.connect
def _after_task(*, task: Task, state: str | None = None, **_kwargs: Any) -> None:
    if task.request.is_eager:
        return
    from django.db import close_old_connections, connections

    if state == states.SUCCESS:
        close_old_connections()
    else:
        # A task that failed (or was interrupted by a time limit) may have left its connection
        # in a state Django cannot detect; start the next one afresh.
        connections.close_all()
