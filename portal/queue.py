"""Queue Celery tasks by name once the transaction commits, so services never import tasks.

Tasks import the services they call; if services imported tasks back, the two would only hold
together through imports hidden inside functions. Naming the task breaks the cycle, and the
name is checked against the registry when the work is queued, so a typo fails loudly.
"""

from typing import Any

from django.db import transaction

from .celery import app


def enqueue_on_commit(task_name: str, *args: Any, countdown: float = 0, **kwargs: Any) -> None:
    """Send ``task_name(*args, **kwargs)`` after the current transaction commits.

    ``robust``: the work is kept in a durable row (an outbox row, a job) that a sweeper finds
    again, or is something the person can simply ask for again (a reset code), so a broker that
    is down must not turn a committed change into an error page.
    """
    task = app.tasks[task_name]  # raises NotRegistered for a name no task has
    transaction.on_commit(
        lambda: task.apply_async(args, kwargs, countdown=countdown or None), robust=True
    )
