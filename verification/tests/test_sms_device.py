import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, connections
from django.utils import timezone

from tests.factories import CustomerFactory
from tests.fixtures import last_sms_code
from verification.models import SMSDevice
from verification.normalize import normalize_code
from verification.services import CheckResult, ResendTooSoon, check_sms_code, issue_sms_code
from verification.sms import LocmemBackend


@pytest.fixture
def issued(customer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        issue_sms_code(user=customer)
    return customer, last_sms_code(str(customer.phone_number))


@pytest.mark.django_db
class TestSMSCodes:
    def test_the_right_code_passes_once(self, issued):
        customer, code = issued
        assert check_sms_code(user=customer, code=code) == CheckResult.OK
        assert check_sms_code(user=customer, code=code) == CheckResult.NO_CODE

    def test_the_code_is_never_stored_in_clear(self, issued):
        customer, code = issued
        device = SMSDevice.objects.get(user=customer)
        assert code not in device.token
        assert len(device.token) == 64

    def test_an_expired_code_fails(self, issued):
        customer, code = issued
        with time_machine.travel(timezone.now() + timedelta(seconds=301)):
            assert check_sms_code(user=customer, code=code) == CheckResult.EXPIRED
        assert SMSDevice.objects.get(user=customer).token is not None

    def test_a_wrong_code_throttles_the_next_attempt_even_with_the_right_code(self, issued):
        customer, code = issued
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        with time_machine.travel(timezone.now(), tick=False) as clock:
            assert check_sms_code(user=customer, code=wrong) == CheckResult.INVALID
            assert check_sms_code(user=customer, code=code) == CheckResult.THROTTLED
            clock.shift(1.1)
            assert check_sms_code(user=customer, code=wrong) == CheckResult.INVALID
            clock.shift(1.1)  # the second failure doubles the wait to 2 s
            assert check_sms_code(user=customer, code=code) == CheckResult.THROTTLED
            clock.shift(1.0)
            assert check_sms_code(user=customer, code=code) == CheckResult.OK

    def test_five_wrong_codes_burn_the_code(self, issued):
        customer, code = issued
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        results = []
        with time_machine.travel(timezone.now(), tick=False) as clock:
            for _attempt in range(5):
                results.append(check_sms_code(user=customer, code=wrong))
                clock.shift(60)
            assert results == [CheckResult.INVALID] * 4 + [CheckResult.BURNED]
            assert check_sms_code(user=customer, code=code) == CheckResult.NO_CODE

    def test_a_new_code_invalidates_the_old_one(self, issued, django_capture_on_commit_callbacks):
        customer, old_code = issued
        with time_machine.travel(timezone.now() + timedelta(seconds=61), tick=False) as clock:
            with django_capture_on_commit_callbacks(execute=True):
                issue_sms_code(user=customer)
            new_code = last_sms_code()
            assert len(LocmemBackend.outbox) == 2
            expected_for_old = CheckResult.OK if new_code == old_code else CheckResult.INVALID
            assert check_sms_code(user=customer, code=old_code) == expected_for_old
            clock.shift(2)
            if expected_for_old == CheckResult.INVALID:
                assert check_sms_code(user=customer, code=new_code) == CheckResult.OK

    def test_a_resend_inside_the_cooldown_is_refused_with_the_time_left(self, issued):
        customer, _code = issued
        with pytest.raises(ResendTooSoon) as refused:
            issue_sms_code(user=customer)
        assert 55 <= refused.value.seconds_left <= 61
        assert refused.value.details == {"retry_after_seconds": refused.value.seconds_left}

    def test_codes_typed_with_spaces_dashes_or_full_width_digits_work(self, issued):
        customer, code = issued
        typed = "".join(chr(ord(digit) + 0xFEE0) for digit in code[:3]) + " - " + code[3:]
        assert check_sms_code(user=customer, code=typed) == CheckResult.OK


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("123-456", "123456"),
        ("１２３４５６", "123456"),
        ("Your Activation Rescue code is 123456. It expires in 5 minutes.", "123456"),
        ("12345", ""),
        ("1234567", ""),
        ("codes 123456 and 654321", ""),
        ("", ""),
    ],
)
def test_normalize_code(typed, expected):
    assert normalize_code(typed) == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_verifications_of_one_code_succeed_exactly_once():
    customer = CustomerFactory()
    issue_sms_code(user=customer)  # autocommit: the SMS goes out at once
    code = last_sms_code()
    device_id = SMSDevice.objects.get(user=customer).pk
    ready = threading.Barrier(2)
    outcomes: list[bool] = []

    def verify() -> None:
        try:
            device = SMSDevice.objects.get(pk=device_id)
            ready.wait(timeout=5)
            outcomes.append(device.verify_token(code))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=verify) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert connection.vendor == "postgresql"
    assert sorted(outcomes) == [False, True]
    assert SMSDevice.objects.get(pk=device_id).token is None
