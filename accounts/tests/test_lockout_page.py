"""Supervisors see and lift sign-in lock-outs in the back office; others may not."""

import json
import re

import pytest
from axes.models import AccessAttempt
from django.test import Client

from activation.tests.test_backoffice import current_code
from activation.tests.test_backoffice import sign_in as backoffice_sign_in
from audit.models import SystemEvent
from tests.factories import PASSWORD, CustomerFactory

pytestmark = pytest.mark.django_db

PAGE = "/backoffice/sign-in-lockouts/"
CUSTOMER_ADDRESS = "203.0.113.10"
GUESSER_ADDRESS = "203.0.113.66"
SUPERVISOR_ADDRESS = "198.51.100.5"


def fail_five_times(client, username: str, address: str) -> None:
    for _attempt in range(5):
        client.post(
            "/accounts/login/", {"username": username, "password": "wrong"}, REMOTE_ADDR=address
        )


@pytest.fixture
def locked_customer(client):
    customer = CustomerFactory(username="li.wei", phone_number="+8613800138000")
    fail_five_times(client, "138 0013 8000", CUSTOMER_ADDRESS)
    # Someone guessing a number that has no account, from elsewhere.
    fail_five_times(client, "13900139000", GUESSER_ADDRESS)
    return customer


def staff_client(user) -> Client:
    client = Client()
    backoffice_sign_in(client, user, current_code(user))
    return client


def customer_signs_in(client) -> bool:
    response = client.post(
        "/accounts/login/",
        {"username": "13800138000", "password": PASSWORD},
        REMOTE_ADDR=CUSTOMER_ADDRESS,
    )
    return response.status_code == 302


def lifted_events():
    return SystemEvent.objects.filter(kind="sign_in_lockout.lifted")


def test_a_supervisor_sees_current_lock_outs_with_numbers_masked(
    client, locked_customer, supervisor
):
    page = staff_client(supervisor).get(PAGE)
    assert page.status_code == 200
    lockouts = {lockout.ip_address: lockout for lockout in page.context["lockouts"]}
    assert lockouts.keys() == {CUSTOMER_ADDRESS, GUESSER_ADDRESS}
    assert (lockouts[CUSTOMER_ADDRESS].account, lockouts[CUSTOMER_ADDRESS].failures) == (
        "li.wei",
        5,
    )
    assert lockouts[GUESSER_ADDRESS].account == "139****9000"
    assert "139****9000 (no such account)" in page.text
    assert "13900139000" not in page.text


def test_a_supervisor_lifts_a_lock_out_with_a_reason_on_the_audit_trail(
    client, locked_customer, supervisor
):
    assert not customer_signs_in(client)
    staff = staff_client(supervisor)
    attempt = next(
        lockout.attempt_id
        for lockout in staff.get(PAGE).context["lockouts"]
        if lockout.ip_address == CUSTOMER_ADDRESS
    )
    response = staff.post(
        PAGE,
        {"attempt": attempt, "reason": "customer called, identity checked"},
        REMOTE_ADDR=SUPERVISOR_ADDRESS,
        follow=True,
    )
    assert "The lock-out of li.wei from 203.0.113.10 is lifted." in response.text

    assert customer_signs_in(client)
    event = lifted_events().get()
    assert (event.actor, event.ip_address) == (supervisor, SUPERVISOR_ADDRESS)
    assert event.data == {
        "account": "li.wei",
        "user_id": locked_customer.pk,
        "address": CUSTOMER_ADDRESS,
        "failures": 6,  # five wrong passwords, then the right one refused while locked
        "reason": "customer called, identity checked",
    }
    # The other lock-out stays.
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {GUESSER_ADDRESS}


def test_lifting_needs_a_reason_and_changes_nothing_without_one(
    client, locked_customer, supervisor
):
    staff = staff_client(supervisor)
    attempt = staff.get(PAGE).context["lockouts"][0].attempt_id
    response = staff.post(PAGE, {"attempt": attempt, "reason": "   "})
    assert response.status_code == 400
    assert AccessAttempt.objects.count() == 2
    assert not lifted_events().exists()


@pytest.mark.parametrize("attempt", ["abc", "0", "99999999999999999999", str(2**62)])
def test_a_bad_or_unknown_lock_out_is_refused_without_change(locked_customer, supervisor, attempt):
    staff = staff_client(supervisor)
    response = staff.post(PAGE, {"attempt": attempt, "reason": "x"}, follow=True)
    assert response.status_code in (200, 400)
    assert AccessAttempt.objects.count() == 2
    assert not lifted_events().exists()


def test_lifting_twice_lifts_once(locked_customer, supervisor):
    staff = staff_client(supervisor)
    attempt = staff.get(PAGE).context["lockouts"][0].attempt_id
    staff.post(PAGE, {"attempt": attempt, "reason": "first"})
    response = staff.post(PAGE, {"attempt": attempt, "reason": "second"}, follow=True)
    assert "That lock-out has already ended or been lifted." in response.text
    assert lifted_events().count() == 1


@pytest.mark.parametrize("role", ["agent", "auditor"])
def test_agents_and_auditors_may_neither_see_nor_lift_lock_outs(
    client, locked_customer, role, request
):
    staff = staff_client(request.getfixturevalue(role))
    assert staff.get(PAGE).status_code == 403
    attempt = AccessAttempt.objects.values_list("id", flat=True).first()
    assert staff.post(PAGE, {"attempt": attempt, "reason": "let me in"}).status_code == 403
    assert AccessAttempt.objects.count() == 2
    assert not lifted_events().exists()
    assert not customer_signs_in(client)


def test_the_page_needs_a_back_office_sign_in(client, locked_customer):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert "/backoffice/login/" in response["Location"]


TYPED_IN_THE_WRONG_BOX = "MyS3cretPassw0rd!"


def test_text_naming_no_account_is_shown_and_audited_only_as_a_fingerprint(client, supervisor):
    # Someone typed their password into the username box, five times, from two places.
    fail_five_times(client, TYPED_IN_THE_WRONG_BOX, GUESSER_ADDRESS)
    fail_five_times(Client(), TYPED_IN_THE_WRONG_BOX, CUSTOMER_ADDRESS)
    fail_five_times(Client(), "+secret-passphrase", SUPERVISOR_ADDRESS)
    staff = staff_client(supervisor)

    page = staff.get(PAGE)
    shown = page.context["lockouts"]
    assert len(shown) == 3
    assert TYPED_IN_THE_WRONG_BOX not in page.text
    assert "secret-passphrase" not in page.text
    fingerprints = {lockout.ip_address: lockout.account for lockout in shown}
    # The same text has the same fingerprint wherever it was typed; other text another one.
    assert fingerprints[GUESSER_ADDRESS] == fingerprints[CUSTOMER_ADDRESS]
    assert fingerprints[SUPERVISOR_ADDRESS] != fingerprints[GUESSER_ADDRESS]
    assert re.fullmatch(r"#[0-9a-f]{10}", fingerprints[GUESSER_ADDRESS])
    assert f"{fingerprints[GUESSER_ADDRESS]} (no such account)" in page.text

    attempt = next(lockout.attempt_id for lockout in shown if lockout.ip_address == GUESSER_ADDRESS)
    lifted = staff.post(PAGE, {"attempt": attempt, "reason": "a password typed as username"})
    assert lifted.status_code == 302
    after = staff.get(PAGE)
    assert TYPED_IN_THE_WRONG_BOX not in after.text  # the "lifted" message included
    event = lifted_events().get()
    assert event.data["account"] == fingerprints[GUESSER_ADDRESS]
    assert event.data["user_id"] is None
    assert TYPED_IN_THE_WRONG_BOX not in json.dumps(event.data, ensure_ascii=False)
    assert {lockout.ip_address for lockout in after.context["lockouts"]} == {
        CUSTOMER_ADDRESS,
        SUPERVISOR_ADDRESS,
    }
