"""Staff authenticators: replaced only with both codes, reset only by two supervisors."""

import base64
import re
from datetime import timedelta

import pyotp
import pytest
import time_machine
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import SystemEvent
from portal.tests.test_backoffice import back_office_sign_in, current_code
from tests.factories import StaffFactory
from verification import factors
from verification.models import AuthenticatorReset, Channel, Purpose
from verification.services import ChannelUnavailable, check_code

pytestmark = pytest.mark.django_db

PAGE = "/backoffice/authenticator/"
RESETS = "/backoffice/authenticator-resets/"


def later(seconds: int = 31):
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds))


def signed_in(client, user):
    back_office_sign_in(client, user, current_code(user))
    return client


def test_a_staff_member_replaces_their_app_with_a_code_from_the_old_and_the_new(client, agent):
    old = TOTPDevice.objects.get(user=agent)
    signed_in(client, agent)
    page = client.post(PAGE, {"action": "start"}, follow=True)
    secret = re.search(r'class="secret">([A-Z2-7]+)<', page.text).group(1)
    with later():
        response = client.post(
            PAGE,
            {
                "action": "replace",
                "current_code": current_code(agent),
                "new_code": pyotp.TOTP(secret).now(),
            },
        )
        assert response.status_code == 302
        new = TOTPDevice.objects.get(user=agent)
        assert new.confirmed and new.pk != old.pk
        assert client.get("/backoffice/activation/activationcase/").status_code == 200
    event = SystemEvent.objects.get()
    assert (event.kind, event.actor_id) == ("staff.authenticator_replaced", agent.pk)


def test_a_new_app_alone_does_not_replace_the_staff_members_app(client, agent):
    old = TOTPDevice.objects.get(user=agent)
    signed_in(client, agent)
    page = client.post(PAGE, {"action": "start"}, follow=True)
    secret = re.search(r'class="secret">([A-Z2-7]+)<', page.text).group(1)
    with later():
        response = client.post(
            PAGE,
            {"action": "replace", "current_code": "000000", "new_code": pyotp.TOTP(secret).now()},
        )
    assert "The code from your current app is not right" in response.text
    assert list(TOTPDevice.objects.filter(user=agent, confirmed=True)) == [old]
    assert not SystemEvent.objects.exists()


def test_the_replacement_page_needs_a_verified_back_office_session(client, agent):
    client.force_login(agent)  # password only
    response = client.post(PAGE, {"action": "start"})
    assert response["Location"].startswith("/backoffice/login/")
    assert TOTPDevice.objects.filter(user=agent).count() == 1


def test_a_lost_app_is_reset_by_one_supervisor_and_approved_by_another(
    client, agent, supervisor, other_supervisor
):
    old = TOTPDevice.objects.get(user=agent)
    signed_in(client, supervisor)
    client.post(
        RESETS,
        {"action": "request", "staff_member": agent.pk, "reason": "phone stolen, ticket 42"},
    )
    reset = AuthenticatorReset.objects.get()
    # The requester cannot approve their own request, through the page or the service.
    assert client.post(RESETS, {"action": "approve", "reset_id": reset.pk}).status_code == 403
    with pytest.raises(factors.FactorChangeNotAllowed):
        factors.approve_authenticator_reset(reset_id=reset.pk, staff=supervisor)
    assert TOTPDevice.objects.get(user=agent) == old

    client.logout()
    signed_in(client, other_supervisor)
    response = client.post(RESETS, {"action": "approve", "reset_id": reset.pk})
    assert response.status_code == 302
    # The old app is gone and no new one is made: the member sets it up alone (test_enrolment).
    assert not TOTPDevice.objects.filter(user=agent).exists()
    reset.refresh_from_db()
    assert (reset.status, reset.decided_by) == ("approved", other_supervisor)
    assert reset.enrolment_expires_at == reset.decided_at + timedelta(hours=24)
    assert list(SystemEvent.objects.values_list("kind", "actor")) == [
        ("staff.authenticator_reset_requested", supervisor.pk),
        ("staff.authenticator_reset_approved", other_supervisor.pk),
    ]


def test_supervisors_cannot_reset_a_superusers_authenticator(client, supervisor, other_supervisor):
    root = StaffFactory(is_superuser=True)
    signed_in(client, supervisor)
    assert f'<option value="{root.pk}"' not in client.get(RESETS).text
    response = client.post(RESETS, {"action": "request", "staff_member": root.pk, "reason": "x"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.text
    with pytest.raises(factors.ResetNotAllowed):
        factors.request_authenticator_reset(
            staff=supervisor, staff_member_id=root.pk, reason="lost"
        )
    assert not AuthenticatorReset.objects.exists()

    # Made a superuser while a reset of theirs waited: the approval is refused.
    member = StaffFactory(role="agent")
    before = list(TOTPDevice.objects.filter(user=member).values())
    reset = factors.request_authenticator_reset(
        staff=supervisor, staff_member_id=member.pk, reason="lost"
    )
    member.is_superuser = True
    member.save(update_fields=["is_superuser"])
    client.logout()
    signed_in(client, other_supervisor)
    response = client.post(RESETS, {"action": "approve", "reset_id": reset.pk}, follow=True)
    assert "cannot be reset in the back office" in response.text
    reset.refresh_from_db()
    assert reset.status == "pending"
    assert list(TOTPDevice.objects.filter(user=member).values()) == before
    assert list(SystemEvent.objects.values_list("kind", flat=True)) == [
        "staff.authenticator_reset_requested"
    ]


def test_agents_cannot_reset_authenticators(client, agent, supervisor):
    signed_in(client, agent)
    assert client.get(RESETS).status_code == 403
    assert (
        client.post(
            RESETS, {"action": "request", "staff_member": supervisor.pk, "reason": "x"}
        ).status_code
        == 403
    )
    with pytest.raises(factors.FactorChangeNotAllowed):
        factors.request_authenticator_reset(
            staff=agent, staff_member_id=supervisor.pk, reason="lost"
        )
    assert not AuthenticatorReset.objects.exists()


def test_the_staff_member_cannot_approve_their_own_reset(supervisor, other_supervisor):
    reset = factors.request_authenticator_reset(
        staff=supervisor, staff_member_id=other_supervisor.pk, reason="lost"
    )
    with pytest.raises(factors.FactorChangeNotAllowed):
        factors.approve_authenticator_reset(reset_id=reset.pk, staff=other_supervisor)
    with pytest.raises(factors.FactorChangeNotAllowed):
        factors.request_authenticator_reset(
            staff=supervisor, staff_member_id=supervisor.pk, reason="lost"
        )


def test_a_malformed_reset_id_is_a_bad_request(client, supervisor):
    signed_in(client, supervisor)
    assert client.post(RESETS, {"action": "approve", "reset_id": "²³"}).status_code == 400
    assert client.post(RESETS, {"action": "approve", "reset_id": "999"}).status_code == 302


def test_an_authenticator_code_counts_only_for_activation_and_factor_changes(customer):
    device = TOTPDevice.objects.create(user=customer, name="app", confirmed=True)
    code = pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()
    with pytest.raises(ChannelUnavailable), transaction.atomic():
        check_code(user=customer, channel=Channel.TOTP, code=code, purpose=Purpose.PASSWORD_RESET)
    assert check_code(user=customer, channel=Channel.TOTP, code=code) == "ok"
