"""Password-reset requests cannot be used to flood a number or to use up a customer's codes."""

import pytest

from activation.models import CaseState
from tests.factories import CustomerFactory, open_failed_case
from tests.fixtures import last_sms_code
from verification.models import CodeDelivery, Purpose
from verification.sms import LocmemBackend

pytestmark = pytest.mark.django_db

ATTACKER = "203.0.113.66"
VICTIM_NUMBER = "+8613800138000"


@pytest.fixture
def victim(db):
    return CustomerFactory(phone_number=VICTIM_NUMBER)


@pytest.fixture(autouse=True)
def _no_resend_cooldown(settings):
    # An attacker who waits out the minute between codes gets every one; so does this test at once.
    settings.VERIFICATION_RESEND_COOLDOWN_SECONDS = 0


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

    assert [r.status_code for r in responses] == [302] * 3 + [429] * 7
    assert all(is_rate_limited(r) for r in responses[3:])
    assert "asked for this phone number many times" in responses[3].text
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
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [302] * 3 + [429]
    assert is_rate_limited(known[-1]) and is_rate_limited(unknown[-1])
    for response in (known[-1], unknown[-1]):
        assert "asked for this phone number many times" in response.text
    assert len(LocmemBackend.outbox) == 3
