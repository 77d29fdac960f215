import base64

import pyotp
import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import SystemEvent
from tests.factories import PASSWORD, StaffFactory
from tests.fixtures import last_sms_code
from verification import factors
from verification.sms import LocmemBackend

pytestmark = pytest.mark.django_db

NEW_PASSWORD = {"new_password1": "a new long passphrase", "new_password2": "a new long passphrase"}


def ask_for_reset(client, phone_number, capture):
    """Post the reset form; return the response and the callbacks queued for after commit."""
    with capture(execute=False) as callbacks:
        response = client.post(
            "/accounts/password-reset/", {"phone_number": phone_number}, follow=True
        )
    return response, callbacks


def run(callbacks):
    for callback in callbacks:
        callback()


def test_password_reset_by_sms_code(client, customer, django_capture_on_commit_callbacks):
    response, callbacks = ask_for_reset(
        client, str(customer.phone_number), django_capture_on_commit_callbacks
    )
    assert "If this number belongs to an account" in response.text
    run(callbacks)
    code = last_sms_code(str(customer.phone_number))
    response = client.post(
        "/accounts/password-reset/confirm/", {"code": code, **NEW_PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/accounts/login/"
    customer.refresh_from_db()
    assert customer.check_password("a new long passphrase")


def test_the_reset_request_sends_no_sms_in_the_request_for_a_known_or_unknown_number(
    client, customer, django_capture_on_commit_callbacks
):
    known, known_callbacks = ask_for_reset(
        client, str(customer.phone_number), django_capture_on_commit_callbacks
    )
    unknown, unknown_callbacks = ask_for_reset(
        client, "13900000000", django_capture_on_commit_callbacks
    )
    # Nothing reached the gateway while the requests ran, and both queued the same work.
    assert LocmemBackend.outbox == []
    assert len(known_callbacks) == len(unknown_callbacks) == 1
    assert known.text.count("If this number belongs to an account") == 1
    assert unknown.text.count("If this number belongs to an account") == 1

    run(known_callbacks)  # the task, eager in tests, sends the SMS after the response
    assert [message["to"] for message in LocmemBackend.outbox] == [str(customer.phone_number)]
    run(unknown_callbacks)
    assert len(LocmemBackend.outbox) == 1


def test_password_reset_for_an_unknown_number_looks_the_same_and_sends_nothing(
    client, django_capture_on_commit_callbacks
):
    response, callbacks = ask_for_reset(client, "13900000000", django_capture_on_commit_callbacks)
    run(callbacks)
    assert "If this number belongs to an account" in response.text
    assert not LocmemBackend.outbox
    response = client.post("/accounts/password-reset/confirm/", {"code": "123456", **NEW_PASSWORD})
    assert "That code is not right or has expired" in response.text


def test_a_staff_member_cannot_reset_a_password_by_sms(client, django_capture_on_commit_callbacks):
    staff = StaffFactory(phone_number="+8613700000001")
    response, callbacks = ask_for_reset(
        client, "+8613700000001", django_capture_on_commit_callbacks
    )
    run(callbacks)
    # The page says what it says for any number, and the staff page's hint is there for all.
    assert "If this number belongs to an account" in response.text
    assert not LocmemBackend.outbox
    page = client.get("/accounts/password-reset/")
    assert "a supervisor resets it in the back office" in page.text
    response = client.post("/accounts/password-reset/confirm/", {"code": "123456", **NEW_PASSWORD})
    assert "That code is not right or has expired" in response.text
    staff.refresh_from_db()
    assert staff.check_password(PASSWORD)


def test_a_password_reset_code_cannot_activate_a_credit_line(
    client, customer, django_capture_on_commit_callbacks, monkeypatch
):
    from activation import services
    from activation.models import CaseState
    from tests.factories import open_failed_case
    from verification.services import CheckResult

    # The reset code and then the activation code, fixed so that they surely differ.
    codes = iter(["111111", "222222"])
    monkeypatch.setattr("verification.models.random_number_token", lambda length=6: next(codes))
    _response, callbacks = ask_for_reset(
        client, str(customer.phone_number), django_capture_on_commit_callbacks
    )
    run(callbacks)
    reset_code = last_sms_code()
    case = open_failed_case(customer)
    services.start_verification(case_id=case.pk, customer=customer)
    assert (reset_code, last_sms_code()) == ("111111", "222222")

    result = services.verify_and_submit(case_id=case.pk, customer=customer, code=reset_code)

    assert result == CheckResult.INVALID
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION


def test_a_password_reset_drops_an_app_still_being_set_up_but_keeps_the_confirmed_one(
    client, customer, django_capture_on_commit_callbacks
):
    """Whoever had the old password may have started that app and kept its key."""
    confirmed = TOTPDevice.objects.create(user=customer, name="Authenticator", confirmed=True)
    pending = factors.start_totp_enrollment(user=customer)
    pending_key = pending.bin_key
    _response, callbacks = ask_for_reset(
        client, str(customer.phone_number), django_capture_on_commit_callbacks
    )
    run(callbacks)
    client.post(
        "/accounts/password-reset/confirm/",
        {"code": last_sms_code(str(customer.phone_number)), **NEW_PASSWORD},
    )

    assert list(TOTPDevice.objects.filter(user=customer)) == [confirmed]
    # The old key's code (with a proof that would hold) sets up nothing.
    customer.refresh_from_db()
    client.force_login(customer)
    response = client.post(
        "/accounts/profile/",
        {
            "action": "confirm_app",
            "code": pyotp.TOTP(base64.b32encode(pending_key).decode()).now(),
            "proof_channel": "totp",
            "proof_code": pyotp.TOTP(base64.b32encode(confirmed.bin_key).decode()).now(),
        },
    )
    assert response.status_code == 302  # nothing pending: "start again"
    assert list(TOTPDevice.objects.filter(user=customer)) == [confirmed]
    assert not SystemEvent.objects.filter(kind__startswith="factor.").exists()
