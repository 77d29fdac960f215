import base64
import re
from datetime import timedelta

import pyotp
import pytest
import time_machine
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

pytestmark = pytest.mark.django_db


def test_a_customer_enrolls_an_authenticator_app_with_qr_code_and_key(client, customer):
    client.force_login(customer)
    page = client.post("/accounts/profile/", {"action": "start_app"}, follow=True)
    assert "<svg" in page.text
    secret = re.search(r'class="secret">([A-Z2-7]+)<', page.text).group(1)
    device = TOTPDevice.objects.get(user=customer)
    assert secret == base64.b32encode(device.bin_key).decode()
    assert not device.confirmed

    wrong = client.post("/accounts/profile/", {"action": "confirm_app", "code": "000000"})
    assert "That code is not right" in wrong.text

    with time_machine.travel(timezone.now() + timedelta(seconds=2)):  # past the throttle
        code = pyotp.TOTP(secret).now()
        response = client.post(
            "/accounts/profile/", {"action": "confirm_app", "code": code}, follow=True
        )
    assert "Your authenticator app is set up" in response.text
    assert TOTPDevice.objects.get(user=customer).confirmed


def test_the_profile_masks_destinations(client, customer):
    customer.email = "zhang.wei@example.com"
    customer.save()
    client.force_login(customer)
    page = client.get("/accounts/profile/")
    assert "138****" in page.text
    assert "z***@example.com" in page.text
    assert str(customer.phone_number) not in page.text
    assert "zhang.wei@" not in page.text
