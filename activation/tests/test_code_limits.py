"""The code limits through the real retry page: guesses per code, the throttle, lock-outs, input."""

import uuid

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from activation.models import CaseEvent, CaseState, CodeSubmission, CoreRequest
from tests.factories import open_failed_case
from tests.fixtures import last_sms_code
from verification.models import SMSDevice
from verification.sms import LocmemBackend

pytestmark = pytest.mark.django_db

# More than the throttle asks between guesses at one code (1, 2, 4, 8 s with the default factor),
# far less than a code lives (300 s): the pace of a customer retyping, not of a script.
GUESS_SPACING_SECONDS = 10


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def retry_url(case):
    return reverse("activation:retry", args=[case.pk])


def send(client, case):
    return client.post(retry_url(case), {"action": "send", "channel": "sms"})


def verify(client, case, code, submission_id=None):
    data = {"action": "verify", "code": code, "submission_id": str(submission_id or uuid.uuid4())}
    return client.post(retry_url(case), data)


def wrong_code() -> str:
    return f"{(int(last_sms_code()) + 1) % 1_000_000:06d}"


def lock_out(client, case, clock, settings) -> None:
    """Ask for a code and burn it with wrong guesses at a customer's pace."""
    assert send(client, case).status_code == 302
    wrong = wrong_code()
    for _guess in range(settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE):
        verify(client, case, wrong)
        clock.shift(GUESS_SPACING_SECONDS)


def test_repeated_lock_outs_through_the_retry_page_hand_the_case_to_staff(
    signed_in, customer, clock, settings
):
    assert settings.VERIFICATION_THROTTLE_FACTOR == 1  # the real throttle, not switched off
    assert settings.VERIFICATION_LOCKOUTS_BEFORE_REVIEW == 3
    case = open_failed_case(customer)

    for lockouts in (1, 2):
        lock_out(signed_in, case, clock, settings)
        case.refresh_from_db()
        assert (case.state, case.failure_reason) == (CaseState.FAILED, "too_many_attempts")
        failed = CaseEvent.objects.filter(
            case=case, kind="state.changed", state_after=CaseState.FAILED
        )
        assert failed.count() == lockouts
    lock_out(signed_in, case, clock, settings)

    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "too_many_attempts")
    assert (
        "Our staff are looking at your activation" in signed_in.get(f"/activation/{case.pk}/").text
    )
    # Every guess was weighed (none refused by a throttle left over from an earlier code) ...
    results = list(
        CaseEvent.objects.filter(case=case, kind="verification.failed").values_list(
            "data__result", flat=True
        )
    )
    assert results == (["code_invalid"] * 4 + ["too_many_attempts"]) * 3
    # ... and nothing else happened: three codes, three lock-outs, one hand-over, no submission.
    assert len(LocmemBackend.outbox) == 3
    handed_over = CaseEvent.objects.filter(case=case, state_after=CaseState.NEEDS_REVIEW)
    assert [event.data["lockouts"] for event in handed_over] == [3]
    assert not CoreRequest.objects.filter(case=case).exists()
    assert verify(signed_in, case, wrong_code()).status_code == 302  # the page is closed to codes
    assert CaseEvent.objects.filter(case=case, kind="verification.failed").count() == 15


def test_the_right_code_from_a_fresh_sms_after_a_lock_out_is_accepted(
    signed_in, customer, clock, settings, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    lock_out(signed_in, case, clock, settings)

    send(signed_in, case)
    with django_capture_on_commit_callbacks(execute=False):
        response = verify(signed_in, case, last_sms_code())  # at once, no wait after the lock-out

    assert response.status_code == 302
    assert response["Location"] == f"/activation/{case.pk}/"
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert CoreRequest.objects.filter(case=case).count() == 1


def test_a_new_code_does_not_inherit_the_throttle_of_the_one_before(signed_in, customer, clock):
    case = open_failed_case(customer)
    send(signed_in, case)
    verify(signed_in, case, wrong_code())
    verify(signed_in, case, wrong_code())  # inside the 1 s throttle: refused, not weighed
    device = SMSDevice.objects.get(user=customer)
    assert (device.code_failures, device.throttling_failure_count) == (1, 1)

    clock.shift(61)  # past the resend cooldown
    send(signed_in, case)

    device.refresh_from_db()
    assert (device.code_failures, device.throttling_failure_count) == (0, 0)
    assert device.throttling_failure_timestamp is None


def test_within_one_code_the_throttle_still_refuses_a_quick_second_guess_even_a_right_one(
    signed_in, customer, clock
):
    case = open_failed_case(customer)
    send(signed_in, case)
    code = last_sms_code()
    verify(signed_in, case, wrong_code())
    # Answering a guess while throttled would let a script try codes as fast as it likes.
    response = verify(signed_in, case, code)
    assert "Too many tries in a row" in response.text
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION


@pytest.mark.parametrize("typed", ["abcdef", "12345", "1234567", "12-34-5", "一二三四五六"])
def test_input_that_cannot_be_a_code_is_a_form_error_that_costs_no_guess(
    signed_in, customer, clock, settings, typed, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    send(signed_in, case)
    code = last_sms_code()

    for _try in range(settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE + 1):
        response = verify(signed_in, case, typed)
        assert response.status_code == 200
        assert "A code has 6 digits" in response.text
        assert 'aria-invalid="true"' in response.text

    assert not CaseEvent.objects.filter(case=case, kind="verification.failed").exists()
    device = SMSDevice.objects.get(user=customer)
    assert (device.code_failures, device.throttling_failure_count) == (0, 0)
    # The code is still whole, and the customer is not made to wait.
    with django_capture_on_commit_callbacks(execute=False):
        assert verify(signed_in, case, code).status_code == 302
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING


def test_a_pasted_sms_still_counts_as_its_code(
    signed_in, customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    send(signed_in, case)
    with django_capture_on_commit_callbacks(execute=False):
        response = verify(signed_in, case, LocmemBackend.outbox[-1]["body"])
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING


def test_a_garbled_submission_id_beside_the_right_code_is_treated_as_absent(
    signed_in, customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    send(signed_in, case)
    data = {"action": "verify", "code": last_sms_code(), "submission_id": "not-a-uuid"}
    with django_capture_on_commit_callbacks(execute=False):
        response = signed_in.post(retry_url(case), data)
        again = signed_in.post(retry_url(case), data)  # the double tap still submits once

    assert response.status_code == again.status_code == 302
    assert response["Location"] == f"/activation/{case.pk}/"
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert CoreRequest.objects.filter(case=case).count() == 1
    assert not CodeSubmission.objects.filter(case=case).exists()


def test_a_garbled_submission_id_beside_a_wrong_code_shows_the_wrong_code_message(
    signed_in, customer
):
    case = open_failed_case(customer)
    send(signed_in, case)
    data = {"action": "verify", "code": wrong_code(), "submission_id": "x" * 500}
    response = signed_in.post(retry_url(case), data)
    assert response.status_code == 200
    assert "That code is not right" in response.text
    assert CaseEvent.objects.filter(case=case, kind="verification.failed").count() == 1
