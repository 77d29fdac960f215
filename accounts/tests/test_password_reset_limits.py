"""Password-reset requests cannot be used to flood a number or to use up a customer's codes."""

import re

import pytest
from django.test import Client

from activation.models import CaseState
from tests.factories import CustomerFactory, open_failed_case
from tests.fixtures import last_sms_code
from verification.models import CodeDelivery, Purpose
from verification.sms import LocmemBackend

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("still_clock")]

ATTACKER = "203.0.113.66"
VICTIM_NUMBER = "+8613800138000"


@pytest.fixture
def victim(db):
    return CustomerFactory(phone_number=VICTIM_NUMBER)


@pytest.fixture(autouse=True)
def _no_resend_cooldown(settings):
    # An attacker who waits out the minute between codes gets every one; so does this test at once.
    # Below zero, as django-otp allows a new code only once the cooldown has strictly passed, and
    # the clock is stopped so that the fixed rate-limit windows cannot roll over mid-test.
    settings.VERIFICATION_RESEND_COOLDOWN_SECONDS = -1


def ask_for_reset(client, phone_number, capture, address=ATTACKER):
    """Post the reset form from ``address``, running the queued task as a worker would."""
    with capture(execute=True):
        return client.post(
            "/accounts/password-reset/", {"phone_number": phone_number}, REMOTE_ADDR=address
        )


def sent_to(number):
    return [message["body"] for message in LocmemBackend.outbox if message["to"] == number]


def is_rate_limited(response) -> bool:
    return (
        response.status_code == 429
        and int(response["Retry-After"]) >= 1
        and "Please slow down" in response.text
        and f"Please try again in {response['Retry-After']} second" in response.text
    )


def led_to_enter_a_code_already_sent(response) -> bool:
    """Refused by the number's limit: sent, with no new code, to the page where one is entered."""
    return (
        response.status_code == 302 and response["Location"] == "/accounts/password-reset/confirm/"
    )


def send_and_enter_an_activation_code(client, customer):
    case = open_failed_case(customer)
    client.force_login(customer)
    client.post(f"/activation/{case.pk}/retry/", {"action": "send", "channel": "sms"})
    code = last_sms_code(str(customer.phone_number))
    client.post(f"/activation/{case.pk}/retry/", {"action": "verify", "code": code})
    case.refresh_from_db()
    return case


def test_ten_reset_requests_for_a_victims_number_send_three_texts_and_leave_activation_alone(
    client, victim, django_capture_on_commit_callbacks
):
    responses = [
        ask_for_reset(client, "138 0013 8000", django_capture_on_commit_callbacks)
        for _ in range(10)
    ]

    assert all(led_to_enter_a_code_already_sent(r) for r in responses)
    page = client.get("/accounts/password-reset/confirm/")
    assert "asked for this phone number many times" in page.text
    assert "The newest code already sent to it still works" in page.text
    assert len(sent_to(VICTIM_NUMBER)) == 3  # the per-number limit, not ten
    assert all("password reset code" in body for body in sent_to(VICTIM_NUMBER))

    case = send_and_enter_an_activation_code(client, victim)
    assert case.state == CaseState.SUBMITTING
    assert "password reset code" not in sent_to(VICTIM_NUMBER)[-1]
    assert len(LocmemBackend.outbox) == 4


def test_reset_codes_past_their_hourly_budget_do_not_use_up_the_activation_codes(
    client, victim, settings, django_capture_on_commit_callbacks
):
    # With the request limits out of the way, the codes' own hourly budgets are what is left.
    settings.ACCOUNTS_PASSWORD_RESET_RATE_PER_IP = "100/h"
    settings.ACCOUNTS_PASSWORD_RESET_RATE_PER_NUMBER = "100/h"
    for _ in range(11):
        ask_for_reset(client, VICTIM_NUMBER, django_capture_on_commit_callbacks)
    assert len(sent_to(VICTIM_NUMBER)) == settings.VERIFICATION_MAX_CODES_PER_HOUR_PER_DESTINATION

    case = send_and_enter_an_activation_code(client, victim)
    assert case.state == CaseState.SUBMITTING
    deliveries = CodeDelivery.objects.filter(user=victim)
    assert deliveries.filter(purpose=Purpose.PASSWORD_RESET).count() == 10
    assert deliveries.filter(purpose=Purpose.ACTIVATION).count() == 1


def test_a_requester_past_the_address_limit_gets_429_and_nothing_is_sent(
    client, django_capture_on_commit_callbacks
):
    numbers = [CustomerFactory().phone_number for _ in range(11)]
    # Eleven addresses of one IPv6 /64 are one requester.
    responses = [
        ask_for_reset(
            client, str(number), django_capture_on_commit_callbacks, f"2001:db8:5:6::{n + 1}"
        )
        for n, number in enumerate(numbers)
    ]

    assert [r.status_code for r in responses] == [302] * 10 + [429]
    assert is_rate_limited(responses[-1])
    assert [m["to"] for m in LocmemBackend.outbox] == [str(n) for n in numbers[:10]]
    # Another requester is not held up by this one.
    response = ask_for_reset(
        client, str(numbers[-1]), django_capture_on_commit_callbacks, "2001:db8:5:7::1"
    )
    assert response.status_code == 302
    assert sent_to(str(numbers[-1]))


def test_the_per_number_limit_looks_the_same_for_a_number_with_and_without_an_account(
    client, victim, django_capture_on_commit_callbacks
):
    def statuses(number):
        return [
            ask_for_reset(client, number, django_capture_on_commit_callbacks, f"198.51.100.{n}")
            for n in range(4)
        ]

    known, unknown = statuses(VICTIM_NUMBER), statuses("13900000000")
    assert all(led_to_enter_a_code_already_sent(r) for r in known + unknown)
    pages = [Client(), Client()]
    for page, number in zip(pages, (VICTIM_NUMBER, "13900000000"), strict=True):
        ask_for_reset(page, number, django_capture_on_commit_callbacks, "192.0.2.9")
    known_page, unknown_page = (page.get("/accounts/password-reset/confirm/") for page in pages)
    assert known_page.status_code == unknown_page.status_code == 200

    def same_for_all(page):
        # The form's CSRF token, and the wait (each number's window ends at its own time).
        text = page.text.replace(str(page.context["csrf_token"]), "TOKEN")
        return re.sub(r"a new code in \d+ minutes?", "a new code in N minutes", text)

    assert same_for_all(known_page) == same_for_all(unknown_page)
    assert "asked for this phone number many times" in known_page.text
    assert len(LocmemBackend.outbox) == 3


def test_resets_an_attacker_asked_for_still_let_the_victim_set_a_new_password(
    client, victim, django_capture_on_commit_callbacks
):
    for _ in range(3):
        response = ask_for_reset(client, VICTIM_NUMBER, django_capture_on_commit_callbacks)
        assert led_to_enter_a_code_already_sent(response)
    received = [re.search(r"\b(\d{6})\b", body).group(1) for body in sent_to(VICTIM_NUMBER)]
    assert len(received) == 3

    # The victim's own request is past the number's limit: no new code, but the page to enter one.
    victims_phone = Client()
    refused = ask_for_reset(
        victims_phone, "138 0013 8000", django_capture_on_commit_callbacks, "192.0.2.7"
    )
    assert led_to_enter_a_code_already_sent(refused)
    assert len(sent_to(VICTIM_NUMBER)) == 3
    page = victims_phone.get("/accounts/password-reset/confirm/")
    assert "The newest code already sent to it still works" in page.text
    assert re.search(r"You can ask for a new code in \d+ minutes?\.", page.text)

    new_password = "a new long passphrase"
    done = victims_phone.post(
        "/accounts/password-reset/confirm/",
        {"code": received[-1], "new_password1": new_password, "new_password2": new_password},
        REMOTE_ADDR="192.0.2.7",
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/login/"
    victim.refresh_from_db()
    assert victim.check_password(new_password)
    assert len(LocmemBackend.outbox) == 3  # nothing else was sent


def test_past_the_address_limit_no_one_is_led_to_the_code_page(
    victim, django_capture_on_commit_callbacks
):
    requester = Client()
    for n in range(10):
        ask_for_reset(requester, f"1390000{n:04d}", django_capture_on_commit_callbacks)
    refused = ask_for_reset(requester, VICTIM_NUMBER, django_capture_on_commit_callbacks)
    assert is_rate_limited(refused)
    assert requester.session.get("password_reset_phone") != VICTIM_NUMBER
    assert not LocmemBackend.outbox
