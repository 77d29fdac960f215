"""Staff sessions end after an idle time and after a working day at most."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from tests.factories import StaffFactory

from .test_backoffice import back_office_sign_in, current_code

pytestmark = pytest.mark.django_db

QUEUE = "/backoffice/activation/activationcase/"


def test_an_idle_staff_session_is_signed_out(client, settings):
    settings.BACKOFFICE_SESSION_IDLE_MINUTES = 30
    staff = StaffFactory(role="agent")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        back_office_sign_in(client, staff, current_code(staff))
        assert client.get(QUEUE).status_code == 200
        clock.shift(timedelta(minutes=29))
        assert client.get(QUEUE).status_code == 200  # used within the idle time: still open
        clock.shift(timedelta(minutes=31))
        response = client.get(QUEUE)
    assert response.status_code == 302
    assert response["Location"].startswith("/backoffice/login/")
    assert "_auth_user_id" not in client.session
    assert client.get(QUEUE).status_code == 302  # signed out for good, not just redirected once


def test_a_busy_staff_session_still_ends_after_the_maximum_age(client, settings):
    settings.BACKOFFICE_SESSION_IDLE_MINUTES = 30
    settings.BACKOFFICE_SESSION_MAX_HOURS = 1
    staff = StaffFactory(role="agent")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        back_office_sign_in(client, staff, current_code(staff))
        for _step in range(2):
            clock.shift(timedelta(minutes=25))
            assert client.get(QUEUE).status_code == 200
        clock.shift(timedelta(minutes=15))  # 65 minutes after sign-in, 15 after the last page
        response = client.get(QUEUE)
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


def test_a_customer_session_has_no_staff_idle_limit(client, customer, settings):
    settings.BACKOFFICE_SESSION_IDLE_MINUTES = 30
    client.force_login(customer)
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        assert client.get("/activation/").status_code == 200
