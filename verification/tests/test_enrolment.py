"""After a four-eyes reset the member alone sets up the new app; no supervisor sees its key."""

import base64
import re
from datetime import timedelta

import pyotp
import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import SystemEvent
from portal.tests.test_backoffice import app_code, back_office_sign_in, is_verified
from tests.factories import PASSWORD, StaffFactory
from verification.models import AuthenticatorReset

pytestmark = pytest.mark.django_db

LOGIN = "/backoffice/login/"
ENROL = "/backoffice/authenticator/enrol/"
RESETS = "/backoffice/authenticator-resets/"
QUEUE = "/backoffice/activation/activationcase/"


def verified_client(user) -> Client:
    client = Client()
    back_office_sign_in(client, user, app_code(user))
    return client


def reset_through_the_pages(member, requester, approver):
    """One supervisor asks, another approves; return the approver's client and answer."""
    verified_client(requester).post(
        RESETS, {"action": "request", "staff_member": member.pk, "reason": "phone stolen"}
    )
    reset = AuthenticatorReset.objects.get(staff_member=member, status="pending")
    approver_client = verified_client(approver)
    answer = approver_client.post(RESETS, {"action": "approve", "reset_id": reset.pk}, follow=True)
    return approver_client, answer


def password_sign_in(client, user, code: str = ""):
    return client.post(
        f"{LOGIN}?next=/backoffice/",
        {"username": user.username, "password": PASSWORD, "otp_token": code},
    )


def enrolment_key(page) -> str:
    return re.search(r'class="secret">([A-Z2-7]+)<', page.text).group(1)


def kinds() -> list[str]:
    return list(SystemEvent.objects.order_by("seq").values_list("kind", flat=True))


def test_the_approver_sees_no_key_and_what_they_know_opens_nothing(
    agent, supervisor, other_supervisor
):
    old_secret = base64.b32encode(TOTPDevice.objects.get(user=agent).bin_key).decode()
    thief = verified_client(agent)  # a session opened with the lost phone

    approver, answer = reset_through_the_pages(agent, supervisor, other_supervisor)

    assert answer.status_code == 200
    assert 'class="secret"' not in answer.text and "otpauth" not in answer.text
    assert not TOTPDevice.objects.filter(user=agent).exists()
    # Neither the old app nor the old session opens the back office any more.
    assert not is_verified(thief)
    attacker = Client()
    password_sign_in(attacker, agent, pyotp.TOTP(old_secret).now())
    assert attacker.get(QUEUE).status_code == 302
    # The approver cannot reach the member's enrolment page from their own session.
    assert approver.get(ENROL).status_code == 302
    assert not TOTPDevice.objects.filter(user=agent).exists()


def test_the_member_is_sent_to_set_up_a_new_app_before_anything_else(
    agent, supervisor, other_supervisor
):
    approver, _answer = reset_through_the_pages(agent, supervisor, other_supervisor)
    member = Client()

    response = password_sign_in(member, agent)
    assert (response.status_code, response["Location"]) == (302, ENROL)
    for url in (QUEUE, "/backoffice/", "/backoffice/authenticator/", "/activation/"):
        assert member.get(url).status_code == 302, url
    member.post("/backoffice/authenticator/", {"action": "start"})
    assert not TOTPDevice.objects.filter(user=agent).exists()

    page = member.get(ENROL)
    assert page.status_code == 200
    secret = enrolment_key(page)
    assert member.get(ENROL).text.count(secret) == 1  # the same key while this session sets up
    assert secret not in approver.get(RESETS).text

    wrong = member.post(ENROL, {"code": "000000"})
    assert "The code from the new app is not right" in wrong.text
    assert not is_verified(member)

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):  # past the throttle
        done = member.post(ENROL, {"code": pyotp.TOTP(secret).now()})
        assert done.status_code == 302
        assert is_verified(member)
    device = TOTPDevice.objects.get(user=agent)
    assert device.confirmed and base64.b32encode(device.bin_key).decode() == secret
    reset = AuthenticatorReset.objects.get()
    assert reset.enrolled_at is not None
    assert kinds() == [
        "staff.authenticator_reset_requested",
        "staff.authenticator_reset_approved",
        "staff.authenticator_enrolment_started",
        "staff.authenticator_enrolled",
    ]
    assert SystemEvent.objects.get(kind="staff.authenticator_enrolled").actor_id == agent.pk


def test_the_enrolment_window_is_used_once(agent, supervisor, other_supervisor):
    reset_through_the_pages(agent, supervisor, other_supervisor)
    first, second = Client(), Client()
    password_sign_in(first, agent)
    password_sign_in(second, agent)
    first_key = enrolment_key(first.get(ENROL))
    first.post(ENROL, {"code": pyotp.TOTP(first_key).now()})
    assert is_verified(first)
    enrolled = list(TOTPDevice.objects.filter(user=agent).values())

    # Another session that signed in with the password during the window gets nothing now.
    response = second.post(ENROL, {"code": pyotp.TOTP(first_key).now()})
    assert response.status_code == 302
    assert not is_verified(second)
    third = Client()
    response = password_sign_in(third, agent)
    assert response.status_code == 200  # the sign-in form again: a code is needed
    assert not is_verified(third)
    assert third.get(ENROL).status_code == 302
    assert list(TOTPDevice.objects.filter(user=agent).values()) == enrolled
    assert kinds().count("staff.authenticator_enrolled") == 1


def test_the_enrolment_window_closes_after_the_configured_hours(
    settings, agent, supervisor, other_supervisor
):
    settings.BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS = 24
    reset_through_the_pages(agent, supervisor, other_supervisor)
    approved_at = timezone.now()

    with time_machine.travel(approved_at + timedelta(hours=24, minutes=1)):
        member = Client()
        response = password_sign_in(member, agent)
        assert response.status_code == 200
        assert member.get(ENROL).status_code == 302
        assert not is_verified(member)

    # A page opened just in time does not enrol once the window has closed.
    with time_machine.travel(approved_at + timedelta(hours=23, minutes=59)) as clock:
        member = Client()
        password_sign_in(member, agent)
        secret = enrolment_key(member.get(ENROL))
        clock.shift(timedelta(minutes=2))
        response = member.post(ENROL, {"code": pyotp.TOTP(secret).now()})
        assert response.status_code == 302
        assert not is_verified(member)
    assert not TOTPDevice.objects.filter(user=agent, confirmed=True).exists()
    assert "staff.authenticator_enrolled" not in kinds()


def test_a_password_set_by_someone_else_after_the_approval_closes_the_window(
    agent, supervisor, other_supervisor
):
    root = StaffFactory(is_superuser=True)
    reset_through_the_pages(agent, supervisor, other_supervisor)
    # The member could enrol with their own password now ...
    assert password_sign_in(Client(), agent)["Location"] == ENROL

    verified_client(root).post(
        f"/backoffice/accounts/user/{agent.pk}/password/",
        {"password1": "Hijacked-pass-987!", "password2": "Hijacked-pass-987!"},
    )
    agent.refresh_from_db()
    assert agent.check_password("Hijacked-pass-987!")
    # ... but whoever set a new password afterwards cannot use the window with it.
    attacker = Client()
    response = attacker.post(
        LOGIN, {"username": agent.username, "password": "Hijacked-pass-987!", "otp_token": ""}
    )
    assert response.status_code == 200
    assert attacker.get(ENROL).status_code == 302
    assert not TOTPDevice.objects.filter(user=agent).exists()


def test_a_member_with_an_app_cannot_open_the_enrolment_page(client, agent):
    back_office_sign_in(client, agent, app_code(agent))
    assert client.get(ENROL).status_code == 302
    client.logout()
    response = password_sign_in(client, agent)
    assert response.status_code == 200  # no window: the code is required as always
    assert client.get(ENROL).status_code == 302
    assert TOTPDevice.objects.filter(user=agent).count() == 1
