"""After a four-eyes reset the member alone sets up the new app; no supervisor sees its key."""

import base64
import re
from datetime import timedelta

import pyotp
import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.services import create_staff_user
from accounts.tests.test_admin import change_form_data
from audit.models import SystemEvent
from portal.tests.test_backoffice import back_office_sign_in, current_code, is_verified
from tests.factories import PASSWORD, StaffFactory
from verification import enrolment
from verification.models import AuthenticatorReset

pytestmark = pytest.mark.django_db

LOGIN = "/backoffice/login/"
ENROL = "/backoffice/authenticator/enrol/"
RESETS = "/backoffice/authenticator-resets/"
QUEUE = "/backoffice/activation/activationcase/"


def verified_client(user) -> Client:
    client = Client()
    back_office_sign_in(client, user, current_code(user))
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


def reset_keeping_the_requester(member, requester, approver) -> Client:
    """As ``reset_through_the_pages``; return the requester's client (an app code is single-use,
    so the requester could not sign in again within the same 30 seconds)."""
    requester_client = verified_client(requester)
    requester_client.post(
        RESETS, {"action": "request", "staff_member": member.pk, "reason": "phone stolen"}
    )
    reset = AuthenticatorReset.objects.get(staff_member=member, status="pending")
    verified_client(approver).post(RESETS, {"action": "approve", "reset_id": reset.pk})
    return requester_client


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
    back_office_sign_in(client, agent, current_code(agent))
    assert client.get(ENROL).status_code == 302
    client.logout()
    response = password_sign_in(client, agent)
    assert response.status_code == 200  # no window: the code is required as always
    assert client.get(ENROL).status_code == 302
    assert TOTPDevice.objects.filter(user=agent).count() == 1


# --- The re-test's chain: a superuser setting up a takeover through a pending reset ------------


def set_password_in_the_admin(root_client, member, password: str):
    response = root_client.post(
        f"/backoffice/accounts/user/{member.pk}/password/",
        {"password1": password, "password2": password},
    )
    assert response.status_code == 302
    member.refresh_from_db()
    assert member.check_password(password)


def test_a_password_set_after_the_request_is_shown_to_the_approver_and_refuses_the_approval(
    supervisor, other_supervisor
):
    target = StaffFactory(username="sup3", role="supervisor")
    root = StaffFactory(username="root-rob", is_superuser=True)
    verified_client(supervisor).post(
        RESETS, {"action": "request", "staff_member": target.pk, "reason": "phone stolen"}
    )
    reset = AuthenticatorReset.objects.get()
    devices = list(TOTPDevice.objects.filter(user=target).values())
    set_password_in_the_admin(verified_client(root), target, "Chosen-by-root-123!")

    approver = verified_client(other_supervisor)
    page = approver.get(RESETS).text
    assert "Password set for sup3 by root-rob" in page
    answer = approver.post(RESETS, {"action": "approve", "reset_id": reset.pk}, follow=True)

    assert "password was changed after this reset was asked for" in answer.text
    reset.refresh_from_db()
    assert (reset.status, reset.enrolment_expires_at) == ("pending", None)
    assert list(TOTPDevice.objects.filter(user=target).values()) == devices
    # The password root chose opens no window: a code is still asked for.
    attacker = Client()
    response = attacker.post(
        LOGIN, {"username": "sup3", "password": "Chosen-by-root-123!", "otp_token": ""}
    )
    assert response.status_code == 200
    assert attacker.get(ENROL).status_code == 302
    assert kinds() == ["staff.authenticator_reset_requested", "account.password_set"]


def test_someone_who_just_made_themselves_supervisor_can_neither_ask_for_nor_approve_a_reset(
    settings, supervisor, other_supervisor, auditor
):
    settings.BACKOFFICE_RESET_ROLE_AGE_HOURS = 24
    root = StaffFactory(username="root-rob", is_superuser=True)
    made_at = timezone.now()
    root_client = verified_client(root)
    data = change_form_data(root_client, root)
    data["groups"] = [str(Group.objects.get(name="supervisor").pk)]
    assert root_client.post(f"/backoffice/accounts/user/{root.pk}/change/", data).status_code == 302
    assert root.groups.filter(name="supervisor").exists()

    asked = root_client.post(
        RESETS, {"action": "request", "staff_member": auditor.pk, "reason": "x"}, follow=True
    )
    assert "was made a supervisor" in asked.text
    assert not AuthenticatorReset.objects.filter(staff_member=auditor).exists()

    verified_client(supervisor).post(
        RESETS, {"action": "request", "staff_member": auditor.pk, "reason": "phone stolen"}
    )
    reset = AuthenticatorReset.objects.get()
    approved = root_client.post(RESETS, {"action": "approve", "reset_id": reset.pk}, follow=True)
    assert "was made a supervisor" in approved.text
    reset.refresh_from_db()
    assert reset.status == "pending"
    assert TOTPDevice.objects.filter(user=auditor, confirmed=True).exists()
    assert kinds() == ["staff.role_changed", "staff.authenticator_reset_requested"]

    # A day later the role is old enough, but the approver still sees who granted it to whom.
    with time_machine.travel(made_at + timedelta(hours=25)):
        approver = verified_client(other_supervisor)
        page = approver.get(RESETS).text
        assert "Role changed for root-rob by root-rob" not in page  # root is not in this reset
        reset_client = verified_client(root)
        reset_client.post(RESETS, {"action": "reject", "reset_id": reset.pk})
        reset_client.post(
            RESETS, {"action": "request", "staff_member": auditor.pk, "reason": "lost"}
        )
        mine = AuthenticatorReset.objects.get(status="pending")
        assert mine.requested_by == root
        page = approver.get(RESETS).text
        assert "Role changed for root-rob by root-rob" in page
        assert "groups +supervisor" in page


def test_a_supervisor_just_created_on_the_command_line_cannot_approve_a_reset(
    settings, supervisor, auditor
):
    settings.BACKOFFICE_RESET_ROLE_AGE_HOURS = 24
    verified_client(supervisor).post(
        RESETS, {"action": "request", "staff_member": auditor.pk, "reason": "phone stolen"}
    )
    reset = AuthenticatorReset.objects.get()
    # An operator with shell access makes a second pair of eyes of their own.
    fresh = create_staff_user(username="sup-fresh", role="supervisor", password=PASSWORD).user

    fresh_client = verified_client(fresh)
    approved = fresh_client.post(RESETS, {"action": "approve", "reset_id": reset.pk}, follow=True)

    assert "was made a supervisor" in approved.text
    reset.refresh_from_db()
    assert reset.status == "pending"
    assert TOTPDevice.objects.filter(user=auditor, confirmed=True).exists()


# --- One key per window, held by the session that asked for it ---------------------------------


def test_a_second_session_cannot_swap_the_key_of_a_member_who_is_setting_up(
    agent, supervisor, other_supervisor
):
    requester = reset_keeping_the_requester(agent, supervisor, other_supervisor)
    member = Client(REMOTE_ADDR="198.51.100.7")
    password_sign_in(member, agent)
    secret = enrolment_key(member.get(ENROL))
    assert enrolment_key(member.get(ENROL)) == secret  # a reload shows the same key

    someone = Client(REMOTE_ADDR="203.0.113.66")  # knows the password
    password_sign_in(someone, agent)
    page = someone.get(ENROL)
    assert page.status_code == 200
    assert 'class="secret"' not in page.text and "otpauth" not in page.text
    assert "started in another browser" in page.text and "198.51.100.7" in page.text
    too_early = someone.post(ENROL, {"action": "start_again"})
    assert "too early to start again" in too_early.text
    assert 'class="secret"' not in too_early.text
    assert someone.post(ENROL, {"code": pyotp.TOTP(secret).now()}).status_code == 200
    assert not is_verified(someone)

    # The supervisors see the start, with its address.
    assert "Set-up started from 198.51.100.7" in requester.get(RESETS).text
    done = member.post(ENROL, {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 302 and is_verified(member)
    assert kinds() == [
        "staff.authenticator_reset_requested",
        "staff.authenticator_reset_approved",
        "staff.authenticator_enrolment_started",
        "staff.authenticator_enrolled",
    ]


def test_after_the_hold_another_session_may_start_again_and_the_replacement_is_audited(
    agent, supervisor, other_supervisor
):
    requester = reset_keeping_the_requester(agent, supervisor, other_supervisor)
    first = Client(REMOTE_ADDR="198.51.100.7")
    password_sign_in(first, agent)
    first_key = enrolment_key(first.get(ENROL))
    started = timezone.now()

    with time_machine.travel(started + enrolment.KEY_HOLD + timedelta(minutes=1)):
        second = Client(REMOTE_ADDR="198.51.100.8")
        password_sign_in(second, agent)
        assert 'value="start_again"' in second.get(ENROL).text
        assert second.post(ENROL, {"action": "start_again"}).status_code == 302
        second_key = enrolment_key(second.get(ENROL))
        assert second_key != first_key
        # The first browser is told, not handed a new key.
        stale = first.post(ENROL, {"code": pyotp.TOTP(first_key).now()})
        assert "no longer works" in stale.text and 'class="secret"' not in stale.text
        assert not is_verified(first)
        restarted = SystemEvent.objects.get(kind="staff.authenticator_enrolment_restarted")
        assert (restarted.ip_address, restarted.data["replaced_key_started_from"]) == (
            "198.51.100.8",
            "198.51.100.7",
        )
        page = requester.get(RESETS).text
        assert "Set-up started again, replacing the key from 198.51.100.8" in page
        assert second.post(ENROL, {"code": pyotp.TOTP(second_key).now()}).status_code == 302
        assert is_verified(second)
    assert TOTPDevice.objects.filter(user=agent).count() == 1
