"""Issue and check one-time codes; the activation flow calls these inside its own transaction."""

import enum
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from portal.errors import DomainError

from .models import SMSDevice
from .sms import send_sms


class VerificationError(DomainError):
    code = "verification_error"


class NoPhoneNumber(VerificationError):
    code = "no_phone_number"


class ResendTooSoon(VerificationError):
    code = "resend_too_soon"
    http_status = 429

    def __init__(self, *, retry_at: datetime) -> None:
        self.retry_at = retry_at
        seconds = max(int((retry_at - timezone.now()).total_seconds()) + 1, 1)
        self.seconds_left = seconds
        super().__init__(
            _("Please wait %(seconds)d seconds before asking for another code.")
            % {"seconds": seconds},
            retry_after_seconds=seconds,
        )


class CheckResult(enum.StrEnum):
    OK = "ok"
    INVALID = "code_invalid"
    EXPIRED = "code_expired"
    NO_CODE = "no_code"
    THROTTLED = "throttled"
    BURNED = "too_many_attempts"


@dataclass(frozen=True)
class IssuedCode:
    device: SMSDevice
    destination: str
    valid_until: datetime


def sms_device_for(user: User) -> SMSDevice:
    """Return the customer's SMS device for their current phone number, creating it if needed."""
    if not user.phone_number:
        raise NoPhoneNumber(_("There is no mobile number on your account."))
    device, _created = SMSDevice.objects.get_or_create(
        user=user,
        phone_number=user.phone_number,
        defaults={"name": "SMS", "confirmed": True},
    )
    return device


@transaction.atomic
def issue_sms_code(*, user: User) -> IssuedCode:
    """Generate a new code (invalidating the last one) and text it once the transaction commits."""
    device = sms_device_for(user)
    device = SMSDevice.objects.select_for_update().get(pk=device.pk)
    allowed, info = device.generate_is_allowed()
    if not allowed:
        raise ResendTooSoon(retry_at=info["next_generation_at"])
    code = device.generate_token(commit=False)
    device.cooldown_set(commit=False)
    device.save(update_fields=["token", "valid_until", "code_failures", "last_generated_timestamp"])
    minutes = settings.VERIFICATION_CODE_TTL_SECONDS // 60
    body = _(
        "Your Activation Rescue code is %(code)s. It expires in %(minutes)d minutes. "
        "Never share it with anyone, including our staff."
    ) % {"code": code, "minutes": minutes}
    destination = str(device.phone_number)
    transaction.on_commit(lambda: send_sms(to=destination, body=body))
    return IssuedCode(device=device, destination=destination, valid_until=device.valid_until)


@transaction.atomic
def check_sms_code(*, user: User, code: str) -> CheckResult:
    """Check ``code`` against the customer's current SMS code, counting wrong guesses."""
    device = SMSDevice.objects.select_for_update().get(pk=sms_device_for(user).pk)
    allowed, _info = device.verify_is_allowed()
    if not allowed:
        return CheckResult.THROTTLED
    if device.token is None:
        return CheckResult.NO_CODE
    if timezone.now() >= device.valid_until:
        return CheckResult.EXPIRED
    if device.verify_token(code):
        device.throttle_reset(commit=False)
        device.cooldown_reset(commit=False)
        device.save(
            update_fields=[
                "throttling_failure_timestamp",
                "throttling_failure_count",
                "last_generated_timestamp",
            ]
        )
        return CheckResult.OK
    device.throttle_increment(commit=False)
    device.code_failures += 1
    result = CheckResult.INVALID
    if device.code_failures >= settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE:
        # The code is burned: a new one must be requested.
        device.token = None
        result = CheckResult.BURNED
    device.save(
        update_fields=[
            "throttling_failure_timestamp",
            "throttling_failure_count",
            "code_failures",
            "token",
        ]
    )
    return result
