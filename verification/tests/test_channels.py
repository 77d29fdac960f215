import base64
import re
from datetime import timedelta

import pyotp
import pytest
import time_machine
from django.core import mail
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.fixtures import last_sms_code
from verification.models import Channel, CodeDelivery, EmailDevice, SMSDevice
from verification.services import (
    CheckResult,
    ResendTooSoon,
    TooManyCodes,
    check_code,
    issue_code,
)
from verification.sms import LocmemBackend

from .contract import ChannelContract, wrong


class HashedCodeContract(ChannelContract):
    """What SMS and e-mail codes promise beyond the common contract."""

    device_model: type

    def fresh_code(self, user) -> str:
        issue_code(user=user, channel=self.channel)
        return self.last_code()

    def last_code(self) -> str:
        raise NotImplementedError

    def test_the_code_is_never_stored_in_clear(self, user):
        code = self.fresh_code(user)
        device = self.device_model.objects.get(user=user)
        assert code not in device.token
        assert len(device.token) == 64

    def test_an_expired_code_says_so(self, user):
        code = self.fresh_code(user)
        with time_machine.travel(timezone.now() + timedelta(seconds=301)):
            assert self.check(user, code) == CheckResult.EXPIRED

    def test_five_wrong_codes_burn_the_code_and_a_new_one_can_be_sent_at_once(self, user):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            code = self.fresh_code(user)
            results = []
            for _attempt in range(5):
                results.append(self.check(user, wrong(code)))
                clock.shift(60)
            assert results == [CheckResult.INVALID] * 4 + [CheckResult.BURNED]
            assert self.check(user, code) == CheckResult.NO_CODE
            clock.shift(20)  # well inside the usual cooldown
            assert self.check(user, self.fresh_code(user)) == CheckResult.OK

    def test_a_new_code_after_a_burned_one_passes_at_once_with_its_own_guesses(self, user):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            code = self.fresh_code(user)
            for _attempt in range(5):
                self.check(user, wrong(code))
                clock.shift(10)  # the pace the throttle asks of one code (1, 2, 4, 8 s)
            new = self.fresh_code(user)
            # Neither the old code's throttle nor its guesses carry over to the new one.
            results = [self.check(user, wrong(new))]
            clock.shift(1)
            results.append(self.check(user, new))
        assert results == [CheckResult.INVALID, CheckResult.OK]

    def test_a_resend_inside_the_cooldown_is_refused_with_the_time_left(self, user):
        self.fresh_code(user)
        with pytest.raises(ResendTooSoon) as refused:
            issue_code(user=user, channel=self.channel)
        assert 55 <= refused.value.seconds_left <= 61

    def test_after_the_cooldown_a_new_code_replaces_the_old_one(self, user):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            old = self.fresh_code(user)
            clock.shift(61)
            new = self.fresh_code(user)
            if new != old:  # one chance in a million that both are equal
                assert self.check(user, old) == CheckResult.INVALID
                clock.shift(2)
            assert self.check(user, new) == CheckResult.OK

    def test_the_hourly_limit_per_customer_stops_more_codes(self, user, settings):
        settings.VERIFICATION_MAX_CODES_PER_HOUR_PER_CUSTOMER = 3
        with time_machine.travel(timezone.now(), tick=False) as clock:
            for _code in range(3):
                self.fresh_code(user)
                clock.shift(61)
            with pytest.raises(TooManyCodes):
                issue_code(user=user, channel=self.channel)
            clock.shift(3600)
            self.fresh_code(user)
        assert CodeDelivery.objects.filter(user=user).count() == 4


class TestSMS(HashedCodeContract):
    channel = Channel.SMS
    device_model = SMSDevice

    def last_code(self) -> str:
        return last_sms_code()

    def test_the_hourly_limit_per_phone_number_counts_every_account(self, user, settings):
        settings.VERIFICATION_MAX_CODES_PER_HOUR_PER_DESTINATION = 1
        CodeDelivery.objects.create(user=user, channel="sms", destination=str(user.phone_number))
        with pytest.raises(TooManyCodes):
            issue_code(user=user, channel=self.channel)
        assert not LocmemBackend.outbox


class TestEmail(HashedCodeContract):
    channel = Channel.EMAIL
    device_model = EmailDevice

    def last_code(self) -> str:
        return re.search(r"\b(\d{6})\b", mail.outbox[-1].body).group(1)

    def test_the_code_goes_to_the_address_on_the_account(self, user):
        self.fresh_code(user)
        assert mail.outbox[-1].to == ["zhang.wei@example.com"]


class TestAuthenticatorApp(ChannelContract):
    channel = Channel.TOTP

    def enroll(self, user) -> None:
        TOTPDevice.objects.create(user=user, name="app", confirmed=True)

    def fresh_code(self, user) -> str:
        device = TOTPDevice.objects.get(user=user)
        return pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()

    def test_a_code_from_an_unconfirmed_app_does_not_count(self, user):
        TOTPDevice.objects.filter(user=user).update(confirmed=False)
        from verification.services import ChannelUnavailable

        with pytest.raises(ChannelUnavailable):
            check_code(user=user, channel=self.channel, code=self.fresh_code(user))
