"""The back office's sign-in: which second factors open it, and what a verified session gets."""

import base64

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from activation.tests.test_backoffice import current_code, sign_in
from tests.factories import StaffFactory
from tests.fixtures import last_sms_code
from verification.models import Channel, Purpose, SMSDevice
from verification.services import issue_code

pytestmark = pytest.mark.django_db


def back_office_sign_in(client, user, code: str, **extra):
    """The sign-in form's own answer (no redirect followed)."""
    return sign_in(client, user, code, follow=False, **extra)


def is_verified(client) -> bool:
    response = client.get("/backoffice/activation/activationcase/")
    return response.status_code == 200


@pytest.mark.parametrize("purpose", [Purpose.PASSWORD_RESET, Purpose.ACTIVATION])
def test_a_code_texted_for_another_purpose_does_not_open_the_back_office(client, purpose):
    staff = StaffFactory(role="supervisor", phone_number="+8613700000003")
    # Issued directly: the reset page no longer texts staff, but a code may exist (or leak).
    issue_code(user=staff, channel=Channel.SMS, purpose=purpose)
    code = last_sms_code()
    device = SMSDevice.objects.get(user=staff, purpose=purpose)
    response = back_office_sign_in(
        client, staff, code, otp_device=f"verification.smsdevice/{device.pk}"
    )
    assert response.status_code == 200  # the sign-in form again, with an error
    assert not is_verified(client)
    device.refresh_from_db()
    assert device.token is not None  # the texted code was not even tried, let alone used


def test_the_authenticator_app_opens_the_back_office(client):
    staff = StaffFactory(role="agent")
    response = back_office_sign_in(client, staff, current_code(staff))
    assert response.status_code == 302
    assert is_verified(client)


def test_the_session_id_changes_when_the_second_factor_is_verified(client):
    staff = StaffFactory(role="agent")
    client.force_login(staff)  # a session signed in by password first
    before = client.session.session_key
    back_office_sign_in(client, staff, current_code(staff))
    assert is_verified(client)
    assert client.session.session_key != before
    assert client.cookies["sessionid"].value != before


def test_no_one_reads_another_persons_authenticator_secret_in_the_back_office(client):
    admin = StaffFactory(role="supervisor", is_superuser=True)
    other = StaffFactory(role="agent")
    device = TOTPDevice.objects.get(user=other)
    back_office_sign_in(client, admin, current_code(admin))
    change = client.get(f"/backoffice/otp_totp/totpdevice/{device.pk}/change/")
    assert change.status_code == 200
    assert device.key not in change.text
    assert base64.b32encode(device.bin_key).decode() not in change.text
    assert "qrcode" not in client.get("/backoffice/otp_totp/totpdevice/").text
    for page in ("config", "qrcode"):
        response = client.get(f"/backoffice/otp_totp/totpdevice/{device.pk}/{page}/")
        assert response.status_code == 403
        assert device.key not in response.text
