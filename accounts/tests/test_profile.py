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
from tests.factories import StaffFactory
from tests.fixtures import last_sms_code

pytestmark = pytest.mark.django_db


def app_code(device: TOTPDevice) -> str:
    return pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()


def later(seconds: int = 31):
    """Past the next time step (a TOTP code works once) and past any throttle."""
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds))


def start_app(client) -> str:
    page = client.post("/accounts/profile/", {"action": "start_app"}, follow=True)
    return re.search(r'class="secret">([A-Z2-7]+)<', page.text).group(1)


def confirmed_app(customer) -> TOTPDevice:
    return TOTPDevice.objects.create(user=customer, name="Authenticator", confirmed=True)


def test_a_customer_enrolls_an_app_proving_themselves_with_an_sms_code(client, customer):
    client.force_login(customer)
    secret = start_app(client)
    device = TOTPDevice.objects.get(user=customer)
    assert secret == base64.b32encode(device.bin_key).decode()
    assert not device.confirmed

    client.post("/accounts/profile/", {"action": "send_code"})
    sms = last_sms_code(str(customer.phone_number))
    response = client.post(
        "/accounts/profile/",
        {
            "action": "confirm_app",
            "code": pyotp.TOTP(secret).now(),
            "proof_channel": "sms",
            "proof_code": sms,
        },
        follow=True,
    )
    assert "Your authenticator app is set up" in response.text
    assert TOTPDevice.objects.get(user=customer).confirmed
    event = SystemEvent.objects.get()
    assert (event.kind, event.actor, event.data) == (
        "factor.totp_enrolled",
        customer,
        {"user_id": customer.pk, "proof": "sms"},
    )


def test_a_password_alone_cannot_enrol_an_app(client, customer):
    client.force_login(customer)
    secret = start_app(client)
    refusals = {
        "sms": "does not prove it is you",
        "totp": "Select a valid choice",  # no app yet: it cannot prove anything
        "": "This field is required",
    }
    for step, (proof_channel, refusal) in enumerate(refusals.items(), start=1):
        # Each try in a time step of its own: the app's code is right every time, so only the
        # missing proof can refuse it.
        with later(31 * step):
            response = client.post(
                "/accounts/profile/",
                {
                    "action": "confirm_app",
                    "code": pyotp.TOTP(secret).now(),
                    "proof_channel": proof_channel,
                    "proof_code": "123456",
                },
            )
        assert response.status_code == 200
        assert refusal in response.text
    assert not TOTPDevice.objects.filter(user=customer, confirmed=True).exists()
    assert not SystemEvent.objects.exists()


def test_a_password_alone_cannot_replace_or_remove_the_customers_app(client, customer):
    current = confirmed_app(customer)
    client.force_login(customer)
    response = client.post(
        "/accounts/profile/",
        {"action": "remove_app", "remove-proof_channel": "totp", "remove-proof_code": "000000"},
    )
    assert "does not prove it is you" in response.text
    secret = start_app(client)
    with later():
        client.post(
            "/accounts/profile/",
            {
                "action": "confirm_app",
                "code": pyotp.TOTP(secret).now(),
                "proof_channel": "totp",
                "proof_code": "000000",
            },
        )
    assert list(TOTPDevice.objects.filter(user=customer, confirmed=True)) == [current]
    assert not SystemEvent.objects.exists()


def test_a_password_reset_code_does_not_prove_a_factor_change(
    client, customer, django_capture_on_commit_callbacks
):
    current = confirmed_app(customer)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/accounts/password-reset/", {"phone_number": str(customer.phone_number)})
    reset_code = last_sms_code(str(customer.phone_number))
    client.force_login(customer)
    response = client.post(
        "/accounts/profile/",
        {"action": "remove_app", "remove-proof_channel": "sms", "remove-proof_code": reset_code},
    )
    assert "does not prove it is you" in response.text
    assert list(TOTPDevice.objects.filter(user=customer)) == [current]


def test_the_current_app_replaces_itself_and_the_change_is_audited(client, customer):
    current = confirmed_app(customer)
    client.force_login(customer)
    secret = start_app(client)
    response = client.post(
        "/accounts/profile/",
        {
            "action": "confirm_app",
            "code": pyotp.TOTP(secret).now(),
            "proof_channel": "totp",
            "proof_code": app_code(current),
        },
        follow=True,
    )
    assert "Your authenticator app is set up" in response.text
    new = TOTPDevice.objects.get(user=customer)
    assert new.confirmed and new.pk != current.pk
    assert list(SystemEvent.objects.values_list("kind", "actor")) == [
        ("factor.totp_replaced", customer.pk)
    ]


def test_removing_the_app_needs_a_code_from_it(client, customer):
    current = confirmed_app(customer)
    client.force_login(customer)
    response = client.post(
        "/accounts/profile/",
        {
            "action": "remove_app",
            "remove-proof_channel": "totp",
            "remove-proof_code": app_code(current),
        },
        follow=True,
    )
    assert "The authenticator app was removed" in response.text
    assert not TOTPDevice.objects.filter(user=customer).exists()
    assert list(SystemEvent.objects.values_list("kind", flat=True)) == ["factor.totp_removed"]


def test_a_customer_who_lost_the_app_removes_it_with_an_sms_code(client, customer):
    confirmed_app(customer)
    client.force_login(customer)
    client.post("/accounts/profile/", {"action": "send_code"})
    response = client.post(
        "/accounts/profile/",
        {
            "action": "remove_app",
            "remove-proof_channel": "sms",
            "remove-proof_code": last_sms_code(str(customer.phone_number)),
        },
        follow=True,
    )
    assert "The authenticator app was removed" in response.text
    assert not TOTPDevice.objects.filter(user=customer).exists()


def test_a_staff_session_cannot_touch_the_staff_authenticator_from_the_profile(client):
    staff = StaffFactory(phone_number="+8613700000002")
    device = TOTPDevice.objects.get(user=staff)
    key = device.key
    client.force_login(staff)  # a password sign-in, no second factor
    for data in (
        {"action": "remove_app", "remove-proof_channel": "sms", "remove-proof_code": "123456"},
        {"action": "start_app"},
        {"action": "send_code"},
        {"action": "confirm_app", "code": "123456", "proof_channel": "sms", "proof_code": "1"},
    ):
        response = client.post("/accounts/profile/", data)
        assert response.status_code == 302
        assert response["Location"] == "/backoffice/"
    assert client.get("/accounts/profile/")["Location"] == "/backoffice/"
    assert list(TOTPDevice.objects.filter(user=staff).values_list("pk", "key", "confirmed")) == [
        (device.pk, key, True)
    ]
    assert not SystemEvent.objects.exists()


def test_the_profile_masks_destinations(client, customer):
    customer.email = "zhang.wei@example.com"
    customer.save()
    client.force_login(customer)
    page = client.get("/accounts/profile/")
    assert "138****" in page.text
    assert "z***@example.com" in page.text
    assert str(customer.phone_number) not in page.text
    assert "zhang.wei@" not in page.text


def test_starting_again_soon_shows_the_same_key_and_later_makes_a_fresh_one(client, customer):
    """A key left pending for long may have been seen by someone else: it is not handed on."""
    client.force_login(customer)
    first = start_app(client)
    with later(10 * 60):
        assert start_app(client) == first  # a second press moments later changes nothing
    with later(16 * 60):
        fresh = start_app(client)
    assert fresh != first
    assert TOTPDevice.objects.filter(user=customer).count() == 1

    # The old key's code no longer confirms anything.
    client.post("/accounts/profile/", {"action": "send_code"})
    response = client.post(
        "/accounts/profile/",
        {
            "action": "confirm_app",
            "code": pyotp.TOTP(first).now(),
            "proof_channel": "sms",
            "proof_code": last_sms_code(str(customer.phone_number)),
        },
    )
    assert "That code is not right." in response.text
    assert not TOTPDevice.objects.filter(user=customer, confirmed=True).exists()
    assert not SystemEvent.objects.exists()


def test_a_confirmed_app_dates_from_its_confirmation_not_from_its_start(client, customer):
    client.force_login(customer)
    with time_machine.travel(timezone.now() - timedelta(minutes=10)):
        secret = start_app(client)
    client.post("/accounts/profile/", {"action": "send_code"})
    client.post(
        "/accounts/profile/",
        {
            "action": "confirm_app",
            "code": pyotp.TOTP(secret).now(),
            "proof_channel": "sms",
            "proof_code": last_sms_code(str(customer.phone_number)),
        },
    )
    app = TOTPDevice.objects.get(user=customer, confirmed=True)
    assert app.created_at > timezone.now() - timedelta(minutes=1)


def _confirm_with_sms(who, customer, secret: str):
    who.post("/accounts/profile/", {"action": "send_code"})
    return who.post(
        "/accounts/profile/",
        {
            "action": "confirm_app",
            "code": pyotp.TOTP(secret).now(),
            "proof_channel": "sms",
            "proof_code": last_sms_code(str(customer.phone_number)),
        },
    )


def test_a_key_started_long_ago_cannot_be_confirmed(client, customer):
    client.force_login(customer)
    with time_machine.travel(timezone.now() - timedelta(days=10)):
        old_secret = start_app(client)
    response = _confirm_with_sms(client, customer, old_secret)
    assert response.status_code == 302  # "expired, start again"
    assert not TOTPDevice.objects.filter(user=customer, confirmed=True).exists()


def test_a_key_is_shown_to_and_confirmed_from_the_session_that_started_it_only(client, customer):
    client.force_login(customer)
    intruder = Client()  # someone else signed in to the account, e.g. with a stolen password
    intruder.force_login(customer)
    secret = start_app(client)
    assert secret not in intruder.get("/accounts/profile/").text
    response = _confirm_with_sms(intruder, customer, secret)
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=customer, confirmed=True).exists()
    _confirm_with_sms(client, customer, secret)
    assert TOTPDevice.objects.filter(user=customer, confirmed=True).exists()
