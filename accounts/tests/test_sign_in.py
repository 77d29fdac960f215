import pytest

from accounts.backends import parse_phone_number
from tests.factories import PASSWORD, CustomerFactory
from tests.fixtures import last_sms_code
from verification.sms import LocmemBackend

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


def test_password_reset_by_sms_code(client, customer):
    response = client.post(
        "/accounts/password-reset/", {"phone_number": str(customer.phone_number)}, follow=True
    )
    assert "If this number belongs to an account" in response.text
    code = last_sms_code(str(customer.phone_number))
    response = client.post(
        "/accounts/password-reset/confirm/",
        {
            "code": code,
            "new_password1": "a new long passphrase",
            "new_password2": "a new long passphrase",
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/accounts/login/"
    customer.refresh_from_db()
    assert customer.check_password("a new long passphrase")


def test_password_reset_for_an_unknown_number_looks_the_same_and_sends_nothing(client):
    response = client.post(
        "/accounts/password-reset/", {"phone_number": "13900000000"}, follow=True
    )
    assert "If this number belongs to an account" in response.text
    assert not LocmemBackend.outbox
    response = client.post(
        "/accounts/password-reset/confirm/",
        {
            "code": "123456",
            "new_password1": "a new long passphrase",
            "new_password2": "a new long passphrase",
        },
    )
    assert "That code is not right or has expired" in response.text


def test_a_password_reset_code_cannot_activate_a_credit_line(client, customer):
    from activation import services
    from activation.models import CaseState
    from tests.factories import open_failed_case
    from verification.services import CheckResult

    client.post("/accounts/password-reset/", {"phone_number": str(customer.phone_number)})
    reset_code = last_sms_code()
    case = open_failed_case(customer)
    services.start_verification(case_id=case.pk, customer=customer)
    result = services.verify_and_submit(case_id=case.pk, customer=customer, code=reset_code)
    activation_code = last_sms_code()
    assert result == (CheckResult.OK if reset_code == activation_code else CheckResult.INVALID)
    case.refresh_from_db()
    if reset_code != activation_code:
        assert case.state == CaseState.PENDING_VERIFICATION
