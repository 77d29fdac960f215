import pytest
from celery.exceptions import NotRegistered
from django.db import transaction

from audit.models import SystemEvent
from portal.queue import enqueue_on_commit


def test_a_task_name_no_task_has_fails_when_queued_not_silently_after_commit(db):
    with pytest.raises(NotRegistered):
        enqueue_on_commit("activation.tasks.no_such_task", 1)


def test_a_task_runs_only_once_its_transaction_commits(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        enqueue_on_commit("activation.tasks.verify_audit_chains")
        assert not SystemEvent.objects.filter(kind="audit.verified").exists()

    assert len(callbacks) == 1
    for callback in callbacks:
        callback()
    assert SystemEvent.objects.filter(kind="audit.verified").exists()
