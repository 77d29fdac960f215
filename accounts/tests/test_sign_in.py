import pytest

from accounts.backends import parse_phone_number
from tests.factories import PASSWORD, CustomerFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = {"new_password1": "a new long passphrase", "new_password2": "a new long passphrase"}


def sign_in(client, username, password=PASSWORD, **extra):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, follow=True, **extra
    )


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("13812345678", "+8613812345678"),
        ("+86 138 1234 5678", "+8613812345678"),
        ("138-1234-5678", "+8613812345678"),
        ("li.wei", None),
        ("12345", None),
    ],
)
def test_parse_phone_number(typed, expected):
    assert parse_phone_number(typed) == expected


def test_sign_in_with_the_username(client, customer):
    response = sign_in(client, customer.username)
    assert response.redirect_chain[-1][0] == "/activation/"


def test_sign_in_with_the_phone_number_as_people_type_it(client):
    customer = CustomerFactory(phone_number="+8613812345678")
    response = sign_in(client, "138 1234 5678")
    assert response.redirect_chain[-1][0] == "/activation/"
    assert response.context["user"] == customer


def test_an_unknown_account_and_a_wrong_password_get_the_same_message(client, customer):
    unknown = sign_in(client, "nobody-here")
    wrong_password = sign_in(client, customer.username, "not-the-password")
    unknown_phone = sign_in(client, "13900000000")
    messages = [
        r.context["form"].non_field_errors() for r in (unknown, wrong_password, unknown_phone)
    ]
    assert messages[0] == messages[1] == messages[2]
    assert "do not match an account" in messages[0][0]
    assert all(r.status_code == 200 for r in (unknown, wrong_password, unknown_phone))


def test_repeated_wrong_passwords_lock_the_account_out_from_that_address(client, customer):
    for _attempt in range(5):
        sign_in(client, customer.username, "wrong")
    response = client.post(
        "/accounts/login/", {"username": customer.username, "password": PASSWORD}
    )
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.text
    # Locked out from this address only: the customer is not locked out everywhere by an attacker.
    elsewhere = sign_in(client, customer.username, REMOTE_ADDR="198.51.100.9")
    assert elsewhere.redirect_chain[-1][0] == "/activation/"
