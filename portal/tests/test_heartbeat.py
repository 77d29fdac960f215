import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from portal.celery import app
from portal.heartbeat import worker_heartbeat_age_seconds
from portal.tasks import stamp_worker_heartbeat


def test_beat_stamps_the_heartbeat_every_30_seconds_and_a_worker_knows_the_task():
    entry = settings.CELERY_BEAT_SCHEDULE["stamp-worker-heartbeat"]
    assert entry["schedule"] == 30.0
    app.loader.import_default_modules()  # what a worker does at start
    assert entry["task"] in app.tasks


def test_the_heartbeat_task_stamps_the_time():
    assert worker_heartbeat_age_seconds() is None
    with time_machine.travel(timezone.now(), tick=False) as clock:
        stamp_worker_heartbeat.delay()
        assert worker_heartbeat_age_seconds() == 0
        clock.shift(90)
        assert worker_heartbeat_age_seconds() == pytest.approx(90)
        stamp_worker_heartbeat.delay()
        assert worker_heartbeat_age_seconds() == 0
