"""The Celery application; its settings live in ``portal.settings`` under ``CELERY_``."""

import os
import time
from contextvars import Token
from logging.config import dictConfig
from typing import Any

from celery import Celery, Task, states
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun
from django.conf import settings

from portal import instruments, logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The project package is no Django app; its tasks (the worker heartbeat) are found by name.
app.autodiscover_tasks(["portal"])

# Celery's Django fix-up closes the database connection before and after every task, so every
# task paid for a new PostgreSQL backend (connect, authenticate, cold caches): a fifth of a
# worker's CPU per delivery in the surge benchmark. Workers instead keep connections the way
# Django keeps them across requests (CONN_MAX_AGE, CONN_HEALTH_CHECKS), and drop them after any
# task that failed. The fix-up's own closing is switched off by a reuse count no worker reaches.
app.conf.update(CELERY_DB_REUSE_MAX=2**62)

# RedBeat (portal/beat.py) looks its settings up under their own lower-case names, which Celery's
# CELERY_ namespace does not give it: without these it would fall back to the broker's URL.
app.conf.update(
    {
        name.removeprefix("CELERY_").lower(): getattr(settings, name)
        for name in dir(settings)
        if name.startswith("CELERY_REDBEAT_")
    }
)


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


# The request id travels in this message header into the tasks a request enqueues.
REQUEST_ID_MESSAGE_HEADER = "portal_request_id"
# The log context each running task replaced, restored when it ends (an eager task runs inside
# the request that enqueued it, whose context goes on after it).
_replaced_log_contexts: dict[str, Token] = {}


@setup_logging.connect
def _configure_logging(**_kwargs: Any) -> None:
    """Log as the web processes do (``settings.LOGGING``), not in Celery's own format."""
    dictConfig(settings.LOGGING)


@before_task_publish.connect
def _carry_request_id(*, headers: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    request_id = logs.current().get("request_id")
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_MESSAGE_HEADER, request_id)


@task_prerun.connect
def _start_task_log_context(*, task_id: str, task: Task, **_kwargs: Any) -> None:
    # An eager task runs inside the request that queued it and keeps its context (user, case);
    # a worker's task starts afresh with what its message carries.
    context = dict(logs.current()) if task.request.is_eager else {}
    carried = task.request.get(REQUEST_ID_MESSAGE_HEADER) or context.get("request_id")
    context.update(request_id=carried, task_id=task_id, task_name=task.name)
    _replaced_log_contexts[task_id] = logs.start(**context)


@task_postrun.connect
def _end_task_log_context(*, task_id: str, **_kwargs: Any) -> None:
    token = _replaced_log_contexts.pop(task_id, None)
    if token is not None:
        logs.end(token)


# When each running task started, for its duration; the outcome each end state is counted as.
_task_started_at: dict[str, float] = {}
TASK_OUTCOMES = {states.SUCCESS: "success", states.RETRY: "retry", states.FAILURE: "failure"}


@task_prerun.connect
def _start_task_timer(*, task_id: str, **_kwargs: Any) -> None:
    _task_started_at[task_id] = time.perf_counter()


@task_postrun.connect
def _count_task(*, task_id: str, task: Task, state: str | None = None, **_kwargs: Any) -> None:
    started = _task_started_at.pop(task_id, None)
    if started is not None:
        instruments.celery_task_duration.labels(task.name).observe(time.perf_counter() - started)
    # An eager task that raised reports no state: it failed (Ignore and Reject are not counted).
    outcome = TASK_OUTCOMES.get(state or states.FAILURE)
    if outcome is not None:
        instruments.celery_tasks.labels(task.name, outcome).inc()
