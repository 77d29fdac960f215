"""Password guessing across addresses: IPv6 blocks, bursts from one address, an account ceiling."""

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

from activation.models import CaseEvent
from tests.factories import PASSWORD, CustomerFactory, StaffFactory, open_failed_case
from tests.fixtures import last_sms_code

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("still_clock")]

# Seven addresses of one IPv6 /64: what one subscriber's router hands out.
ONE_BLOCK = [f"2001:db8:1:2::{n}" for n in range(1, 8)]
CUSTOMER_ADDRESS = "203.0.113.10"


@pytest.fixture
def customer(db):
    return CustomerFactory(username="li.wei", phone_number="+8613800138000")


def sign_in(client, username, password=PASSWORD, address=CUSTOMER_ADDRESS, url="/accounts/login/"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/activation/"


def wrong_password(response) -> bool:
    """The password was checked and refused: the form is shown again with its error."""
    return response.status_code == 200 and "do not match an account" in response.text


def locked_out(response) -> bool:
    return response.status_code == 429 and "Too many sign-in attempts" in response.text


def rate_limited(response) -> bool:
    return (
        response.status_code == 429
        and int(response["Retry-After"]) >= 1
        and "Please slow down" in response.text
    )


def test_thirty_wrong_passwords_from_seven_addresses_of_one_ipv6_64_get_five_checked(
    client, customer, settings
):
    settings.ACCOUNTS_SIGN_IN_RATE_PER_IP = "100/10m"  # the lock-out alone is under test here
    responses = [sign_in(client, "138 0013 8000", "wrong", ONE_BLOCK[n % 7]) for n in range(30)]

    # The fifth wrong password locks the block; the other 25 are refused unchecked.
    assert [wrong_password(r) for r in responses[:4]] == [True] * 4
    assert all(locked_out(r) for r in responses[4:])
    assert locked_out(sign_in(client, "li.wei", PASSWORD, "2001:db8:1:2::abcd"))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"2001:db8:1:2::"}

    # The customer, from another block, signs in; the timeline keeps their full address.
    assert signed_in(sign_in(client, "li.wei", PASSWORD, "2001:db8:9:9::5"))
    case = open_failed_case(customer)
    client.post(
        f"/activation/{case.pk}/retry/",
        {"action": "send", "channel": "sms"},
        REMOTE_ADDR="2001:db8:9:9::5",
    )
    addresses = CaseEvent.objects.filter(case=case).exclude(ip_address=None)
    assert set(addresses.values_list("ip_address", flat=True)) == {"2001:db8:9:9::5"}


def test_a_burst_of_sign_ins_from_one_address_gets_the_friendly_429(client, customer):
    # Thirty accounts tried once each: no account's lock-out ever comes into play.
    responses = [sign_in(client, f"guess{n}", "wrong", "198.51.100.7") for n in range(30)]
    assert all(wrong_password(r) for r in responses)

    refused = sign_in(client, "li.wei", PASSWORD, "198.51.100.7")
    assert rate_limited(refused)
    assert f"Please try again in {refused['Retry-After']} second" in refused.text
    assert "_auth_user_id" not in client.session
    assert AccessAttempt.objects.count() == 30  # the refused attempt never reached a password

    assert signed_in(sign_in(client, "li.wei", PASSWORD, CUSTOMER_ADDRESS))


def test_the_back_office_sign_in_shares_the_address_limit(client):
    staff = StaffFactory(username="agent-ada")
    for n in range(15):
        sign_in(client, f"guess{n}", "wrong", "2001:db8:7:7::1")
    for n in range(15):
        sign_in(client, f"staff{n}", "wrong", "2001:db8:7:7::2", url="/backoffice/login/")

    refused = sign_in(client, staff.username, PASSWORD, "2001:db8:7:7::3", url="/backoffice/login/")
    assert rate_limited(refused)
    assert "_auth_user_id" not in client.session


def test_wrong_passwords_from_many_addresses_stop_at_the_account_ceiling_but_not_for_its_owner(
    customer,
):
    owners_phone = Client()
    assert signed_in(sign_in(owners_phone, "li.wei"))
    owners_phone.post("/accounts/logout/")

    # A botnet: four wrong passwords from each address, one short of each address's lock-out.
    attacker = Client()
    botnet = [f"198.51.100.{n}" for n in range(1, 11)]
    responses = [sign_in(attacker, "+86 138 0013 8000", "wrong", botnet[n // 4]) for n in range(30)]
    assert all(wrong_password(r) for r in responses[:20])
    assert all(rate_limited(r) for r in responses[20:])
    assert "many wrong passwords for this account" in responses[20].text
    # Past the ceiling even the right password is refused unchecked from a browser it never saw.
    assert rate_limited(sign_in(attacker, "li.wei", PASSWORD, botnet[-1]))
    assert "_auth_user_id" not in attacker.session

    # The owner's own phone, from a new address, still gets in.
    assert signed_in(sign_in(owners_phone, "li.wei", PASSWORD, "192.0.2.44"))
    # The owner on a new browser waits out the short window, no longer.
    new_laptop = Client()
    assert rate_limited(sign_in(new_laptop, "li.wei", PASSWORD, "192.0.2.45"))
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert signed_in(sign_in(new_laptop, "li.wei", PASSWORD, "192.0.2.45"))


def test_the_account_ceiling_looks_the_same_for_a_name_with_no_account(customer):
    def attempts(username):
        return [
            sign_in(Client(), username, "wrong", f"198.51.{n // 4}.{n % 4 + 1}") for n in range(21)
        ]

    for username in ("li.wei", "no.such.person"):
        responses = attempts(username)
        assert all(wrong_password(r) for r in responses[:20]), username
        assert rate_limited(responses[20]), username
        assert "many wrong passwords for this account" in responses[20].text


def reach_the_ceiling(username="+86 138 0013 8000"):
    """Twenty wrong passwords from five addresses, four each: one short of each lock-out."""
    attacker = Client()
    for n in range(20):
        assert wrong_password(sign_in(attacker, username, "wrong", f"198.51.100.{n // 4 + 1}"))
    return attacker


def test_a_victims_device_id_replayed_by_an_attacker_does_not_pass_the_ceiling(customer, caplog):
    owners_phone = Client()
    assert signed_in(sign_in(owners_phone, "li.wei"))
    token = owners_phone.cookies["known_browser_token"]
    assert token.value != owners_phone.cookies["device_id"].value
    assert token["httponly"] and token["samesite"] == "Lax"
    assert int(token["max-age"]) == 90 * 24 * 3600
    # The token never reaches the logs or the timeline (and so no export); the device id does.
    case = open_failed_case(customer)
    owners_phone.post(f"/activation/{case.pk}/retry/", {"action": "send", "channel": "sms"})
    events = list(CaseEvent.objects.filter(case=case).values())
    assert events and token.value not in str(events) and token.value not in caplog.text
    device_key = owners_phone.cookies["device_id"].value.split(":")[0].split(".")[0]
    assert {e["device_id"] for e in events} - {""} == {device_key}

    # The device id is shown in exports, so the attacker has it and sends it as his own (even
    # the whole signed cookie, as if stolen from the phone).
    attacker = reach_the_ceiling()
    attacker.cookies["device_id"] = owners_phone.cookies["device_id"].value
    refused = [
        sign_in(attacker, "li.wei", guess, "198.51.100.99") for guess in ("a", "b", PASSWORD)
    ]
    assert all(rate_limited(r) for r in refused)  # unchecked: no 21st guess
    assert "_auth_user_id" not in attacker.session
    assert not AccessAttempt.objects.filter(ip_address="198.51.100.99").exists()
    # A token of his own making is no better.
    attacker.cookies["known_browser_token"] = "A" * 43
    assert rate_limited(sign_in(attacker, "li.wei", PASSWORD, "198.51.100.99"))

    # The owner's phone, with its token, still gets in.
    assert signed_in(sign_in(owners_phone, "li.wei", PASSWORD, "192.0.2.44"))


def test_a_planted_token_is_replaced_at_sign_in_and_passes_no_ceiling(customer):
    shared_kiosk = Client()
    shared_kiosk.cookies["known_browser_token"] = "A" * 43  # planted by the attacker
    assert signed_in(sign_in(shared_kiosk, "li.wei", PASSWORD, "192.0.2.50"))
    assert shared_kiosk.cookies["known_browser_token"].value != "A" * 43

    attacker = reach_the_ceiling()
    attacker.cookies["known_browser_token"] = "A" * 43
    assert rate_limited(sign_in(attacker, "li.wei", PASSWORD, "198.51.100.99"))


def test_after_the_ceiling_a_reset_by_sms_lets_the_owner_in_on_that_same_new_browser(
    customer, django_capture_on_commit_callbacks
):
    attacker = reach_the_ceiling()
    new_laptop = Client()
    assert rate_limited(sign_in(new_laptop, "li.wei", PASSWORD, "192.0.2.45"))

    with django_capture_on_commit_callbacks(execute=True):
        new_laptop.post(
            "/accounts/password-reset/",
            {"phone_number": "13800138000"},
            REMOTE_ADDR="192.0.2.45",
        )
    code = last_sms_code("+8613800138000")
    new_password = "a new long passphrase"
    done = new_laptop.post(
        "/accounts/password-reset/confirm/",
        {"code": code, "new_password1": new_password, "new_password2": new_password},
        REMOTE_ADDR="192.0.2.45",
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/login/"

    # The attacker keeps the account at its ceiling; the owner's new laptop is now known.
    assert rate_limited(sign_in(attacker, "li.wei", "wrong", "198.51.100.50"))
    assert signed_in(sign_in(new_laptop, "138 0013 8000", new_password, "192.0.2.45"))
    # Another new browser is still held at the ceiling: only the one that reset is known.
    assert rate_limited(sign_in(Client(), "li.wei", new_password, "192.0.2.46"))
