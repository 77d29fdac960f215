"""Authenticator devices in the back office: a listing to read, never a form that writes one."""

import base64

import pyotp
import pytest
from django.test import Client, RequestFactory
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import SystemEvent
from portal.backoffice import backoffice
from portal.tests.test_backoffice import back_office_sign_in, current_code, is_verified
from tests.factories import StaffFactory

pytestmark = pytest.mark.django_db

DEVICES = "/backoffice/otp_totp/totpdevice/"
# A key of the attacker's choosing, as in the review's reproduction.
CHOSEN_KEY = "3132333435363738393031323334353637383930"


@pytest.fixture
def superuser(db):
    return StaffFactory(is_superuser=True)


@pytest.fixture
def superuser_client(client, superuser):
    back_office_sign_in(client, superuser, current_code(superuser))
    assert client.get(DEVICES).status_code == 200
    return client


def devices() -> list[dict]:
    return list(TOTPDevice.objects.order_by("pk").values())


def device_form(owner, **changes) -> dict:
    return {
        "user": owner.pk,
        "name": "Authenticator",
        "confirmed": "on",
        "key": CHOSEN_KEY,
        "step": "30",
        "t0": "0",
        "digits": "6",
        "tolerance": "1",
        "drift": "0",
        "throttling_failure_count": "0",
        **changes,
    }


def test_a_superuser_cannot_add_an_authenticator_for_a_staff_member(superuser_client, supervisor):
    before = devices()
    assert superuser_client.get(f"{DEVICES}add/").status_code == 403
    response = superuser_client.post(f"{DEVICES}add/", device_form(supervisor))
    assert response.status_code == 403
    assert devices() == before
    # The chosen key opens nothing: with the password, the sign-in still fails.
    attacker = Client()
    code = pyotp.TOTP(base64.b32encode(bytes.fromhex(CHOSEN_KEY)).decode()).now()
    back_office_sign_in(attacker, supervisor, code)
    assert not is_verified(attacker)
    assert not SystemEvent.objects.exists()


def test_a_superuser_cannot_change_an_authenticators_owner_key_or_confirmation(
    superuser_client, superuser, agent
):
    device = TOTPDevice.objects.get(user=agent)
    before = devices()
    for changes in ({"user": superuser.pk}, {"confirmed": ""}, {"key": CHOSEN_KEY}):
        response = superuser_client.post(
            f"{DEVICES}{device.pk}/change/", device_form(agent, **changes)
        )
        assert response.status_code == 403, changes
    assert devices() == before


def test_a_superuser_cannot_delete_an_authenticator(superuser_client, agent):
    device = TOTPDevice.objects.get(user=agent)
    before = devices()
    assert superuser_client.get(f"{DEVICES}{device.pk}/delete/").status_code == 403
    assert (
        superuser_client.post(f"{DEVICES}{device.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    superuser_client.post(
        DEVICES, {"action": "delete_selected", "_selected_action": [device.pk], "post": "yes"}
    )
    assert devices() == before


def test_the_device_listing_and_a_device_page_still_read_without_any_key(superuser_client, agent):
    device = TOTPDevice.objects.get(user=agent)
    listing = superuser_client.get(DEVICES)
    assert listing.status_code == 200
    assert agent.username in listing.text
    page = superuser_client.get(f"{DEVICES}{device.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert device.key not in page.text
    assert base64.b32encode(device.bin_key).decode() not in page.text


def test_every_otp_device_model_on_the_back_office_refuses_writes_to_a_superuser(superuser):
    request = RequestFactory().get("/backoffice/")
    request.user = superuser
    device_admins = {
        model: model_admin
        for model, model_admin in backoffice._registry.items()
        if issubclass(model, Device)
    }
    assert TOTPDevice in device_admins
    for model, model_admin in device_admins.items():
        assert model_admin.has_view_permission(request), model
        assert not model_admin.has_add_permission(request), model
        assert not model_admin.has_change_permission(request), model
        assert not model_admin.has_delete_permission(request), model
