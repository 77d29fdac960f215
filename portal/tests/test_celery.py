from types import SimpleNamespace

import pytest
from celery import states
from django.db import connection

from portal.celery import _after_task, _before_task

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKER_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))


def test_a_worker_keeps_its_connection_after_a_task_that_succeeded(monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)  # as in production
    connection.close()
    connection.ensure_connection()
    held = connection.connection
    _before_task(task=WORKER_TASK)
    _after_task(task=WORKER_TASK, state=states.SUCCESS)
    assert connection.connection is held


@pytest.mark.parametrize("state", [states.FAILURE, states.RETRY])
def test_a_worker_drops_its_connection_after_a_task_that_did_not_succeed(state):
    connection.ensure_connection()
    _after_task(task=WORKER_TASK, state=state)
    assert connection.connection is None
