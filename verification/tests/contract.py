"""What every verification channel promises, tested once and inherited by each channel's tests."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.utils import timezone

from tests.factories import CustomerFactory
from verification.services import CheckResult, check_code


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


@pytest.mark.django_db
class ChannelContract:
    """Subclasses set ``channel`` and implement ``enroll`` and ``fresh_code``."""

    channel: str

    def enroll(self, user) -> None:
        """Give ``user`` what this channel needs (a phone, an address, an app)."""

    def fresh_code(self, user) -> str:
        raise NotImplementedError

    @pytest.fixture
    def user(self, db):
        user = CustomerFactory(email="zhang.wei@example.com")
        self.enroll(user)
        return user

    def check(self, user, code: str) -> CheckResult:
        return check_code(user=user, channel=self.channel, code=code)

    def test_the_right_code_passes_once(self, user):
        code = self.fresh_code(user)
        assert self.check(user, code) == CheckResult.OK
        assert self.check(user, code) != CheckResult.OK

    def test_an_expired_code_fails(self, user):
        code = self.fresh_code(user)
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            assert self.check(user, code) in (CheckResult.EXPIRED, CheckResult.INVALID)

    def test_a_wrong_code_throttles_the_next_attempt_even_with_the_right_code(self, user):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            code = self.fresh_code(user)
            assert self.check(user, wrong(code)) == CheckResult.INVALID
            assert self.check(user, code) == CheckResult.THROTTLED
            clock.shift(1.1)
            assert self.check(user, code) == CheckResult.OK

    def test_codes_typed_with_spaces_dashes_or_full_width_digits_work(self, user):
        code = self.fresh_code(user)
        typed = "".join(chr(ord(digit) + 0xFEE0) for digit in code[:3]) + " - " + code[3:]
        assert self.check(user, typed) == CheckResult.OK

    @pytest.mark.postgres
    @pytest.mark.django_db(transaction=True)
    def test_two_concurrent_checks_of_one_code_succeed_exactly_once(self, user):
        code = self.fresh_code(user)
        ready = threading.Barrier(2)
        outcomes: list[CheckResult] = []

        def verify() -> None:
            try:
                ready.wait(timeout=5)
                with transaction.atomic():
                    outcomes.append(self.check(user, code))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=verify) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        assert connection.vendor == "postgresql"
        assert sorted(outcomes).count(CheckResult.OK) == 1
        assert len(outcomes) == 2
