from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from activation import services
from activation.models import CaseEvent, CaseState
from activation.tasks import reconcile_activations
from tests.factories import open_failed_case
from verification.sms import LocmemBackend

from .helpers import submitted_case

pytestmark = pytest.mark.django_db


@pytest.fixture
def awaiting(customer, core_simulator, django_capture_on_commit_callbacks):
    """A case the core accepted (202) whose callback never comes."""
    core_simulator.configure(script=["pending"], callback_url="", callback_delay_seconds=0.1)
    case, request = submitted_case(customer, django_capture_on_commit_callbacks)
    services.deliver_core_request(request_id=request.pk)
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_CONFIRMATION
    return case


def test_a_lost_callback_is_made_good_by_polling(
    awaiting, core_simulator, django_capture_on_commit_callbacks
):
    import time

    time.sleep(0.3)  # the simulator confirms the line; its callback goes nowhere
    assert reconcile_activations() == {
        "polled": 0,
        "activated": 0,
        "escalated": 0,
        "unreachable": 0,
        "skipped": 0,
    }
    with (
        time_machine.travel(timezone.now() + timedelta(seconds=61)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        counts = reconcile_activations()
    assert counts["polled"] == 1
    assert counts["activated"] == 1
    awaiting.refresh_from_db()
    assert awaiting.state == CaseState.ACTIVATED
    assert CaseEvent.objects.filter(case=awaiting, kind="core.polled").count() == 1
    assert "is now active" in LocmemBackend.outbox[-1]["body"]


def test_a_case_past_the_sla_goes_to_staff_and_the_customer_is_told(
    awaiting, core_simulator, django_capture_on_commit_callbacks
):
    core_simulator.configure(down=True)
    with (
        time_machine.travel(timezone.now() + timedelta(minutes=16)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        counts = reconcile_activations()
    assert counts == {
        "polled": 0,
        "activated": 0,
        "escalated": 1,
        "unreachable": 1,
        "skipped": 0,
    }
    awaiting.refresh_from_db()
    assert (awaiting.state, awaiting.failure_reason) == (CaseState.NEEDS_REVIEW, "sync_timeout")
    assert "our staff will" in LocmemBackend.outbox[-1]["body"]


def test_reconciling_twice_changes_nothing_more(awaiting, core_simulator):
    core_simulator.configure(down=True)
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        reconcile_activations()
        events = CaseEvent.objects.filter(case=awaiting).count()
        reconcile_activations()
    assert CaseEvent.objects.filter(case=awaiting).count() == events


@pytest.mark.usefixtures("still_clock")
def test_too_many_retry_requests_get_a_friendly_429_that_says_when(client, customer, settings):
    settings.ACTIVATION_RETRY_RATE_PER_CUSTOMER = "3/m"
    case = open_failed_case(customer)
    client.force_login(customer)
    url = f"/activation/{case.pk}/retry/"
    statuses = [client.post(url, {"action": "verify", "code": "1"}).status_code for _ in range(3)]
    assert 429 not in statuses
    response = client.post(url, {"action": "send", "channel": "sms"})
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert f"Please try again in {response['Retry-After']} second" in response.text
    assert not LocmemBackend.outbox  # the limited request did nothing
    assert client.get(url).status_code == 200  # reading the page is not limited
