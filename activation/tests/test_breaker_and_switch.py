from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone, translation

from activation import services
from activation.models import CoreRequest
from activation.services.emergency import ReasonRequired, set_core_submissions_paused
from activation.tasks import sweep_core_outbox
from audit.models import SystemEvent
from audit.services import find_system_chain_break
from portal.breaker import core_breaker, sms_gateway_breaker
from tests.factories import CustomerFactory

from .helpers import submitted_case

pytestmark = pytest.mark.django_db


@pytest.fixture
def breaker(settings):
    settings.CORE_BREAKER_FAILURE_THRESHOLD = 3
    settings.CORE_BREAKER_RESET_SECONDS = 30
    return core_breaker()


class TestCircuitBreaker:
    def test_it_opens_after_consecutive_failures_only(self, breaker):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()  # a success in between resets the count
        breaker.record_failure()
        breaker.record_failure()
        assert breaker.state() == "closed"
        breaker.record_failure()
        assert breaker.state() == "open"
        assert breaker.allow() is False

    def test_after_the_reset_time_one_trial_goes_through(self, breaker):
        for _failure in range(3):
            breaker.record_failure()
        with time_machine.travel(timezone.now() + timedelta(seconds=31)):
            assert breaker.state() == "half_open"
            assert breaker.allow() is True
            assert breaker.allow() is False  # only one trial at a time
            breaker.record_success()
            assert breaker.state() == "closed"
            assert breaker.allow() is True

    def test_a_failed_trial_opens_it_again(self, breaker):
        for _failure in range(3):
            breaker.record_failure()
        with time_machine.travel(timezone.now() + timedelta(seconds=31)) as clock:
            assert breaker.allow() is True
            breaker.record_failure()
            assert breaker.state() == "open"
            clock.shift(31)
            assert breaker.allow() is True


@pytest.fixture
def submission(customer, django_capture_on_commit_callbacks):
    return submitted_case(customer, django_capture_on_commit_callbacks)


def test_while_the_breaker_is_open_submissions_wait_without_using_attempts(
    submission, core_simulator, breaker
):
    _case, request = submission
    core_simulator.configure(down=True)
    for _failure in range(3):
        breaker.record_failure()
    assert services.deliver_core_request(request_id=request.pk) is False
    request.refresh_from_db()
    assert (request.status, request.attempts) == (CoreRequest.Status.PENDING, 0)
    assert core_simulator.stats()["requests"] == 0


def test_failures_against_a_down_core_open_the_breaker(submission, core_simulator, breaker):
    _case, request = submission
    core_simulator.configure(down=True)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _attempt in range(3):
            services.deliver_core_request(request_id=request.pk)
            clock.shift(400)
        assert breaker.state() == "half_open"  # open, and its reset time has passed meanwhile
    assert core_simulator.stats()["requests"] == 3


def test_pausing_queues_submissions_and_resuming_drains_them(
    submission, core_simulator, supervisor, client, django_capture_on_commit_callbacks
):
    case, request = submission
    set_core_submissions_paused(paused=True, actor=supervisor, reason="core maintenance")

    assert services.deliver_core_request(request_id=request.pk) is False
    assert sweep_core_outbox() == 0
    client.force_login(case.credit_line.customer)
    page = client.get(f"/activation/{case.pk}/")
    assert "Your request is saved" in page.text
    assert core_simulator.stats()["requests"] == 0

    set_core_submissions_paused(paused=False, actor=supervisor, reason="maintenance over")
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_core_outbox() == 1
    case.refresh_from_db()
    assert case.state == "activated"

    events = list(SystemEvent.objects.order_by("seq"))
    assert [(e.kind, e.actor, e.data["reason"]) for e in events] == [
        ("core_submissions.paused", supervisor, "core maintenance"),
        ("core_submissions.resumed", supervisor, "maintenance over"),
    ]
    assert events[0].data["queued_requests"] == 1
    assert find_system_chain_break() is None


def test_pausing_without_a_reason_is_refused_in_the_operators_language():
    with pytest.raises(ReasonRequired) as refused:
        set_core_submissions_paused(paused=True, actor=None, reason="  ")
    assert refused.value.message == "Say why: it goes on the audit trail."
    with translation.override("zh-hans"), pytest.raises(ReasonRequired) as refused:
        set_core_submissions_paused(paused=True, actor=None, reason="  ")
    assert refused.value.message == "请说明原因：它将记录在审计轨迹中。"
    assert not SystemEvent.objects.exists()


def test_the_drain_after_a_pause_goes_at_the_configured_rate(
    settings, django_capture_on_commit_callbacks
):
    settings.ACTIVATION_DRAIN_RATE_PER_MINUTE = 12  # two per 10-second sweep
    for _customer in range(5):
        submitted_case(CustomerFactory(), django_capture_on_commit_callbacks)
    set_core_submissions_paused(paused=True, actor=None, reason="outage")
    assert sweep_core_outbox() == 0
    set_core_submissions_paused(paused=False, actor=None, reason="over")
    with django_capture_on_commit_callbacks(execute=False):
        assert sweep_core_outbox() == 2


def test_the_command_pauses_resumes_and_reports(capsys):
    call_command("core_submissions", "pause", "--reason", "outage at the core")
    call_command("core_submissions", "status")
    out = capsys.readouterr().out
    assert "PAUSED" in out
    assert "outage at the core" in out
    call_command("core_submissions", "resume", "--reason", "core is back")
    assert "running" in capsys.readouterr().out
    assert SystemEvent.objects.count() == 2


def test_only_staff_with_the_permission_operate_the_switch(client, agent, supervisor):
    from .test_backoffice import current_code, sign_in

    supervisor.user_permissions.add(Permission.objects.get(codename="operate_core_switch"))
    sign_in(client, agent, current_code(agent))
    assert client.get("/backoffice/core-submissions/").status_code == 403
    assert client.post("/backoffice/core-submissions/", {"reason": "x"}).status_code == 403
    assert not SystemEvent.objects.exists()

    client.logout()
    sign_in(client, supervisor, current_code(supervisor))
    page = client.get("/backoffice/core-submissions/")
    assert "Core submissions are running." in page.text
    response = client.post("/backoffice/core-submissions/", {"reason": "core outage"}, follow=True)
    assert "Core submissions are PAUSED." in response.text
    assert SystemEvent.objects.get().actor == supervisor


def test_the_switch_page_shows_both_breakers(client, supervisor, settings):
    from .test_backoffice import current_code, sign_in

    settings.SMS_GATEWAY_BREAKER_FAILURE_THRESHOLD = 1
    sms_gateway_breaker().record_failure()
    sign_in(client, supervisor, current_code(supervisor))
    page = client.get("/backoffice/core-submissions/")
    assert "Circuit breaker to the core: closed (calls go through)." in page.text
    assert "Circuit breaker to the SMS gateway: open (no calls for now)." in page.text
