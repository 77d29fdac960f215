"""Sign-in lock-outs: per account however it is spelled, per client address behind the proxy."""

import pytest
from axes.models import AccessAttempt

from tests.factories import PASSWORD, CustomerFactory

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.2"
CUSTOMER_ADDRESS = "203.0.113.10"
ATTACKER_ADDRESS = "203.0.113.66"
SPELLINGS = ["13800138000", "+86 138 0013 8000", "+8613800138000", "138-0013-8000", "138 0013 8000"]


@pytest.fixture
def customer(db):
    return CustomerFactory(username="li.wei", phone_number="+8613800138000")


def sign_in(client, username, password=PASSWORD, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/activation/"


def test_wrong_passwords_under_five_spellings_of_one_number_lock_the_account(client, customer):
    failures = [sign_in(client, spelling, "wrong").status_code for spelling in SPELLINGS]
    assert failures == [200, 200, 200, 200, 429]  # the fifth wrong password locks

    for spelling in [*SPELLINGS, "li.wei", "86-138-0013-8000"]:
        response = sign_in(client, spelling)
        assert response.status_code == 429, spelling
        assert "Too many sign-in attempts" in response.text
    assert "_auth_user_id" not in client.session
    # One account, one count: not one row per spelling.
    assert set(AccessAttempt.objects.values_list("username", flat=True)) == {"li.wei"}


def test_the_lock_out_is_for_that_address_only(client, customer):
    for spelling in SPELLINGS:
        sign_in(client, spelling, "wrong", REMOTE_ADDR=ATTACKER_ADDRESS)
    assert sign_in(client, "li.wei", REMOTE_ADDR=ATTACKER_ADDRESS).status_code == 429
    assert signed_in(sign_in(client, "138 0013 8000", REMOTE_ADDR=CUSTOMER_ADDRESS))


def test_signing_in_under_one_spelling_clears_the_failures_of_every_spelling(client, customer):
    for spelling in SPELLINGS[:4]:
        sign_in(client, spelling, "wrong")
    assert signed_in(sign_in(client, "li.wei"))
    client.logout()
    for spelling in SPELLINGS[:4]:
        sign_in(client, spelling, "wrong")
    assert signed_in(sign_in(client, SPELLINGS[4]))


def test_customers_behind_one_trusted_proxy_are_locked_out_separately(client, customer, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for _attempt in range(5):
        sign_in(client, "li.wei", "wrong", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=ATTACKER_ADDRESS)
    attacker = sign_in(client, "li.wei", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=ATTACKER_ADDRESS)
    assert attacker.status_code == 429

    response = sign_in(client, "li.wei", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=CUSTOMER_ADDRESS)
    assert signed_in(response)
    # The attacker's failures were recorded against the attacker's address, not the proxy's.
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER_ADDRESS}


def test_a_forged_header_does_not_escape_the_lock_out_behind_a_trusted_proxy(
    client, customer, settings
):
    settings.TRUSTED_PROXY_COUNT = 1
    for n in range(5):
        forged = f"198.51.100.{n}, {ATTACKER_ADDRESS}"
        sign_in(client, "li.wei", "wrong", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forged)
    forged = f"198.51.100.99, {ATTACKER_ADDRESS}"
    response = sign_in(client, "li.wei", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forged)
    assert response.status_code == 429


def test_a_forged_header_does_not_escape_the_lock_out_without_a_trusted_proxy(
    client, customer, settings
):
    settings.TRUSTED_PROXY_COUNT = 0
    for n in range(5):
        sign_in(
            client,
            SPELLINGS[n],
            "wrong",
            REMOTE_ADDR=ATTACKER_ADDRESS,
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
        )
    response = sign_in(
        client, "li.wei", REMOTE_ADDR=ATTACKER_ADDRESS, HTTP_X_FORWARDED_FOR=CUSTOMER_ADDRESS
    )
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER_ADDRESS}


def test_a_username_longer_than_any_account_is_a_form_error_and_records_nothing(client):
    response = sign_in(client, "x" * 256, "wrong")
    assert response.status_code == 200
    assert "at most 150 characters" in response.text
    assert not AccessAttempt.objects.exists()


def test_a_username_longer_than_any_account_is_a_form_error_in_the_back_office(client):
    response = client.post(
        "/backoffice/login/", {"username": "x" * 256, "password": "wrong", "otp_token": "123456"}
    )
    assert response.status_code == 200
    assert not AccessAttempt.objects.exists()
