"""Bulk recovery through the back office: a job the request starts and a worker carries out."""

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from activation.errors import InvalidWindow
from activation.models import (
    ActivationCase,
    BulkRecoveryJob,
    CaseExport,
    CaseState,
    CoreRequest,
    FailureReason,
)
from activation.services.bulk_recovery import start_bulk_recovery
from activation.tasks import sweep_bulk_recovery_jobs
from audit.models import SystemEvent
from tests.factories import CustomerFactory, open_failed_case, open_review_case

from .test_backoffice import current_code, sign_in

pytestmark = pytest.mark.django_db
START = "/backoffice/bulk-recovery/"


def core_failures(count: int) -> list[ActivationCase]:
    """Cases staff must look at because the core did not answer."""
    return [open_review_case(reason=FailureReason.CORE_UNAVAILABLE) for _ in range(count)]


def window(reason: str = "core outage 14:00-15:00") -> dict[str, str]:
    """The last hour, up to this moment: a window may not end in the future."""
    now = timezone.localtime()
    return {
        "since": (now - timedelta(hours=1)).isoformat(),
        "until": now.isoformat(),
        "reason": reason,
    }


def states(cases: list[ActivationCase]) -> set[str]:
    return set(
        ActivationCase.objects.filter(pk__in=[c.pk for c in cases]).values_list("state", flat=True)
    )


@pytest.fixture
def supervisor_client(client, supervisor):
    sign_in(client, supervisor, current_code(supervisor))
    return client


def test_starting_a_bulk_recovery_answers_at_once_with_a_queued_job_and_changes_no_case(
    supervisor_client, supervisor, django_capture_on_commit_callbacks
):
    cases = core_failures(3)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = supervisor_client.post(START, window())
    job = BulkRecoveryJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/backoffice/bulk-recovery/{job.pk}/"
    assert (job.status, job.requested_by, job.reason) == (
        "queued",
        supervisor,
        "core outage 14:00-15:00",
    )
    assert len(queued) == 1  # the task, sent once the job is committed
    # The request itself touched no case: the worker does that.
    assert states(cases) == {CaseState.NEEDS_REVIEW}
    assert CoreRequest.objects.count() == 0
    started = SystemEvent.objects.get(kind="cases.bulk_recovery_started")
    assert started.actor == supervisor
    assert started.data["job"] == job.pk
    assert started.data["reason"] == "core outage 14:00-15:00"
    assert SystemEvent.objects.count() == 1

    page = supervisor_client.get(response["Location"])
    assert page.status_code == 200
    assert '<meta http-equiv="refresh"' in page.text  # reloads itself, no JavaScript needed
    assert "Waiting for a worker" in page.text


def test_the_worker_recovers_every_case_and_the_page_shows_the_job_done_with_its_counts(
    supervisor_client, supervisor, settings, django_capture_on_commit_callbacks
):
    settings.ACTIVATION_BULK_RECOVERY_BATCH_SIZE = 2
    cases = core_failures(5)
    not_a_core_failure = open_failed_case(CustomerFactory(), reason=FailureReason.CODE_EXPIRED)
    # Tasks are eager in tests: the job runs when the request's transaction commits.
    with django_capture_on_commit_callbacks(execute=True):
        response = supervisor_client.post(START, window())
    job = BulkRecoveryJob.objects.get()
    assert (job.status, job.total, job.processed, job.resubmitted, job.skipped) == (
        "done",
        5,
        5,
        5,
        0,
    )
    assert states(cases) == {CaseState.SUBMITTING}
    assert CoreRequest.objects.count() == 5
    not_a_core_failure.refresh_from_db()
    assert not_a_core_failure.state == CaseState.FAILED
    finished = SystemEvent.objects.get(kind="cases.bulk_recovered")
    assert (finished.actor, finished.data["resubmitted"]) == (supervisor, 5)

    page = supervisor_client.get(response["Location"])
    assert '<meta http-equiv="refresh"' not in page.text
    assert "Done" in page.text
    assert 'value="100"' in page.text
    listing = supervisor_client.get(START)
    assert f'href="/backoffice/bulk-recovery/{job.pk}/"' in listing.text


def test_a_job_whose_task_the_broker_lost_is_carried_out_by_the_sweep(
    supervisor_client, supervisor, django_capture_on_commit_callbacks, time_machine
):
    cases = core_failures(2)
    with django_capture_on_commit_callbacks(execute=False):  # the broker lost the task
        supervisor_client.post(START, window())
    job = BulkRecoveryJob.objects.get()

    assert sweep_bulk_recovery_jobs() == 0  # only just queued: its task may still be on its way
    time_machine.move_to(timezone.now() + timedelta(minutes=2))
    assert sweep_bulk_recovery_jobs() == 1

    job.refresh_from_db()
    assert (job.status, job.resubmitted) == ("done", 2)
    assert states(cases) == {CaseState.SUBMITTING}
    assert sweep_bulk_recovery_jobs() == 0


def test_a_window_that_ends_before_it_starts_is_a_form_error_and_starts_nothing(
    supervisor_client,
):
    core_failures(1)
    backwards = {**window(), "since": window()["until"], "until": window()["since"]}
    response = supervisor_client.post(START, backwards)
    assert response.status_code == 200
    assert "The window must end after it starts." in response.text
    assert not BulkRecoveryJob.objects.exists()
    assert not SystemEvent.objects.exists()


def _days_ago(days: float) -> str:
    return (timezone.localtime() - timedelta(days=days)).strftime("%Y-%m-%d %H:%M")


OUT_OF_BOUNDS = {
    "year 1": ("0001-01-01 00:00", "0001-01-02 00:00", "within the last 90 days"),
    "year 1 to now": ("0001-01-01 00:00", _days_ago(0.01), "within the last 90 days"),
    "far in the future": ("9999-12-31 23:59", "9999-12-31 23:59:59", "cannot end in the future"),
    "from an hour ago to next year": (_days_ago(1 / 24), _days_ago(-365), "in the future"),
    "91 to 89 days ago": (_days_ago(91), _days_ago(89), "within the last 90 days"),
}


@pytest.mark.parametrize(("since", "until", "error"), OUT_OF_BOUNDS.values(), ids=OUT_OF_BOUNDS)
def test_a_window_outside_the_last_90_days_is_a_form_error_and_starts_nothing(
    supervisor_client, since, until, error, django_capture_on_commit_callbacks
):
    core_failures(1)
    with django_capture_on_commit_callbacks(execute=True) as queued:
        response = supervisor_client.post(START, {"since": since, "until": until, "reason": "x"})
    assert response.status_code == 200
    assert error in response.text
    assert not BulkRecoveryJob.objects.exists()
    assert not SystemEvent.objects.exists()
    assert not queued
    assert supervisor_client.get(START).status_code == 200


def test_a_window_of_the_last_90_days_up_to_the_next_minute_is_accepted(
    supervisor_client, django_capture_on_commit_callbacks
):
    cases = core_failures(1)
    # "Until now", typed to the minute: the next minute, a few seconds into the future.
    next_minute = (timezone.localtime() + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M")
    with django_capture_on_commit_callbacks(execute=True):
        response = supervisor_client.post(
            START, {**window(), "since": _days_ago(89.99), "until": next_minute}
        )
    assert response.status_code == 302
    assert BulkRecoveryJob.objects.count() == 1
    assert supervisor_client.get(START).status_code == 200
    assert supervisor_client.get(response["Location"]).status_code == 200
    assert states(cases) == {CaseState.SUBMITTING}


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 2, tzinfo=UTC)),
        (timezone.now() - timedelta(hours=1), datetime(9999, 12, 31, tzinfo=UTC)),
    ],
    ids=["year 1", "ending in 9999"],
)
def test_the_service_refuses_a_window_outside_the_last_90_days_too(supervisor, since, until):
    with pytest.raises(InvalidWindow):
        start_bulk_recovery(staff=supervisor, since=since, until=until, reason="outage")
    assert not BulkRecoveryJob.objects.exists()
    assert not SystemEvent.objects.exists()


@pytest.mark.postgres
def test_a_year_1_job_stored_before_windows_were_bounded_is_stopped_and_the_pages_work_again(
    supervisor_client, supervisor, time_machine
):
    from django.apps import apps
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO activation_bulkrecoveryjob (status, since, until, reason,"
            " requested_by_id, created_at, total, processed, resubmitted, skipped,"
            " last_case_id, error) VALUES ('queued', %s, %s, 'outage', %s, now(),"
            " 0, 0, 0, 0, 0, '') RETURNING id",
            # As PostgreSQL kept a window typed as year 1 in Shanghai: a year-0 (BC) time in UTC.
            ["0001-01-01 00:00:00+08", "0001-01-02 00:00:00+08", supervisor.pk],
        )
        (job_id,) = cursor.fetchone()
    migration = importlib.import_module(
        "activation.migrations.0009_bulk_recovery_jobs_with_unreadable_windows"
    )
    migration.stop_jobs_with_unreadable_windows(apps, None)

    assert supervisor_client.get(START).status_code == 200
    page = supervisor_client.get(f"{START}{job_id}/")
    assert page.status_code == 200
    assert "Stopped by an error" in page.text
    time_machine.move_to(timezone.now() + timedelta(minutes=2))
    assert sweep_bulk_recovery_jobs() == 0  # the sweep no longer queues it again


def test_agents_can_neither_start_a_bulk_recovery_nor_watch_one(
    client, agent, supervisor, django_capture_on_commit_callbacks
):
    job = BulkRecoveryJob.objects.create(
        since=timezone.now(), until=timezone.now(), reason="r", requested_by=supervisor
    )
    sign_in(client, agent, current_code(agent))
    assert client.post(START, window()).status_code == 403
    assert client.get(f"/backoffice/bulk-recovery/{job.pk}/").status_code == 403
    assert BulkRecoveryJob.objects.count() == 1


def test_a_job_that_does_not_exist_is_a_404(supervisor_client):
    assert supervisor_client.get("/backoffice/bulk-recovery/999999/").status_code == 404


def test_the_export_history_is_shown_a_page_at_a_time(supervisor_client, supervisor):
    CaseExport.objects.bulk_create(
        CaseExport(
            format="csv", created_by=supervisor, created_at=timezone.now() - timedelta(minutes=n)
        )
        for n in range(45)
    )
    newest = CaseExport.objects.order_by("-created_at").first()
    oldest = CaseExport.objects.order_by("created_at").first()

    def rows(page) -> int:
        return page.text.count("<tr><td>")

    first = supervisor_client.get("/backoffice/exports/")
    assert rows(first) == 20
    assert f"<tr><td>{newest.pk}</td>" in first.text
    assert "Page 1 of 3" in first.text
    last = supervisor_client.get("/backoffice/exports/?page=3")
    assert rows(last) == 5
    assert f"<tr><td>{oldest.pk}</td>" in last.text
    for nonsense in ("abc", "0", "99", "²"):
        response = supervisor_client.get("/backoffice/exports/", {"page": nonsense})
        assert response.status_code == 200, nonsense
