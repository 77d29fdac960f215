"""Issue and check one-time codes on every channel; callers wrap these in their own transaction."""

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from accounts.masking import mask_email, mask_phone_number
from accounts.models import User
from portal.errors import DomainError

from .delivery import DeliveryError, deliver_code
from .models import Channel, CodeDelivery, EmailDevice, HashedCodeDevice, Purpose, SMSDevice
from .normalize import normalize_code


def _seconds_until(moment: datetime) -> int:
    return max(math.ceil((moment - timezone.now()).total_seconds()), 1)


class VerificationError(DomainError):
    code = "verification_error"


class ChannelUnavailable(VerificationError):
    code = "channel_unavailable"


class ResendTooSoon(VerificationError):
    code = "resend_too_soon"
    http_status = 429

    def __init__(self, *, retry_at: datetime) -> None:
        self.retry_at = retry_at
        self.seconds_left = _seconds_until(retry_at)
        super().__init__(
            _("Please wait %(seconds)d seconds before asking for another code.")
            % {"seconds": self.seconds_left},
            retry_after_seconds=self.seconds_left,
        )


class TooManyCodes(VerificationError):
    code = "too_many_codes"
    http_status = 429

    def __init__(self) -> None:
        super().__init__(
            _("You have asked for too many codes in the last hour. Please try again later.")
        )


class DeliveryFailed(VerificationError):
    code = "delivery_failed"
    http_status = 503


class CheckResult(enum.StrEnum):
    OK = "ok"
    INVALID = "code_invalid"
    EXPIRED = "code_expired"
    NO_CODE = "no_code"
    THROTTLED = "throttled"
    BURNED = "too_many_attempts"
    # The code was right, but the risk checkpoint asks for a stronger factor as well.
    STEP_UP = "step_up"


@dataclass(frozen=True)
class ChannelOption:
    channel: Channel
    destination: str  # masked
    sends_code: bool

    @property
    def label(self) -> str:
        return str(self.channel.label)


@dataclass(frozen=True)
class IssuedCode:
    channel: Channel
    destination: str  # masked
    valid_until: datetime


def channel_options(user: User, *, purpose: str = Purpose.ACTIVATION) -> list[ChannelOption]:
    """The ways this user can receive or produce a code, SMS first."""
    options = []
    if user.phone_number:
        options.append(ChannelOption(Channel.SMS, mask_phone_number(str(user.phone_number)), True))
    if user.email:
        options.append(ChannelOption(Channel.EMAIL, mask_email(user.email), True))
    if purpose == Purpose.ACTIVATION and TOTPDevice.objects.devices_for_user(user, confirmed=True):
        options.append(ChannelOption(Channel.TOTP, "", False))
    if (
        purpose == Purpose.ACTIVATION
        and WebAuthnCredential.objects.filter(user=user, confirmed=True).exists()
    ):
        options.append(ChannelOption(Channel.PASSKEY, "", False))
    return options


def _device_lookup(user: User, channel: str, purpose: str):
    """``(model, lookup, name)`` of the user's code device for ``channel``, or None if unset."""
    if channel == Channel.SMS and user.phone_number:
        return (
            SMSDevice,
            {"user": user, "purpose": purpose, "phone_number": user.phone_number},
            "SMS",
        )
    if channel == Channel.EMAIL and user.email:
        return EmailDevice, {"user": user, "purpose": purpose, "email": user.email}, "E-mail"
    return None


def _code_device(user: User, channel: str, purpose: str) -> HashedCodeDevice:
    """The user's device for ``channel`` at their current destination, locked for this change."""
    found = _device_lookup(user, channel, purpose)
    if found is None:
        raise ChannelUnavailable(_("That way of receiving a code is not set up on your account."))
    model, lookup, name = found
    # The row lock serialises code checks, so wrong guesses are all counted.
    device, _created = model.objects.select_for_update().get_or_create(
        **lookup, defaults={"name": name, "confirmed": True}
    )
    return device


def _destination(device: HashedCodeDevice) -> str:
    return str(device.phone_number) if isinstance(device, SMSDevice) else device.email


def _masked(channel: str, destination: str) -> str:
    return mask_phone_number(destination) if channel == Channel.SMS else mask_email(destination)


def check_hourly_limits(
    user: User, destination: str, purpose: str, *, passkey: bool = False
) -> None:
    since = timezone.now() - timedelta(hours=1)
    # Counted per purpose: anyone can ask for password-reset codes for any number, and those
    # must never use up the customer's activation or factor-change codes. Passkey requests have
    # a budget of their own: cancelled fingerprint prompts must not cost the SMS fallback.
    recent = CodeDelivery.objects.filter(purpose=purpose, sent_at__gte=since)
    if passkey:
        recent = recent.filter(channel=Channel.PASSKEY)
    else:
        recent = recent.exclude(channel=Channel.PASSKEY)
    counts = recent.filter(Q(user=user) | Q(destination=destination)).aggregate(
        customer=Count("pk", filter=Q(user=user)),
        destination=Count("pk", filter=Q(destination=destination)),
    )
    if (
        counts["customer"] >= settings.VERIFICATION_MAX_CODES_PER_HOUR_PER_CUSTOMER
        or counts["destination"] >= settings.VERIFICATION_MAX_CODES_PER_HOUR_PER_DESTINATION
    ):
        raise TooManyCodes()


def _message(code: str, purpose: str) -> str:
    minutes = settings.VERIFICATION_CODE_TTL_SECONDS // 60
    if purpose == Purpose.FACTOR_CHANGE:
        text = _(
            "Your Activation Rescue code to change your authenticator app is %(code)s. It expires "
            "in %(minutes)d minutes. If you did not ask for it, change your password now."
        )
    elif purpose == Purpose.PASSWORD_RESET:
        text = _(
            "Your Activation Rescue password reset code is %(code)s. It expires in %(minutes)d "
            "minutes. If you did not ask for it, ignore this message."
        )
    else:
        text = _(
            "Your Activation Rescue code is %(code)s. It expires in %(minutes)d minutes. "
            "Never share it with anyone, including our staff."
        )
    return text % {"code": code, "minutes": minutes}


@transaction.atomic
def issue_code(*, user: User, channel: str, purpose: str = Purpose.ACTIVATION) -> IssuedCode:
    """Send a new code (invalidating the last one) by SMS or e-mail, now.

    Raises ``ResendTooSoon`` inside the cooldown, ``TooManyCodes`` past the hourly limits and
    ``DeliveryFailed`` when the gateway refuses; in each case nothing changes.
    """
    device = _code_device(user, channel, purpose)
    allowed, info = device.generate_is_allowed()
    if not allowed:
        raise ResendTooSoon(retry_at=info["next_generation_at"])
    destination = _destination(device)
    check_hourly_limits(user, destination, purpose)

    code = device.generate_token(commit=False)
    device.cooldown_set(commit=False)
    device.save(update_fields=[*device.NEW_CODE_FIELDS, "last_generated_timestamp"])
    CodeDelivery.objects.create(
        user=user, channel=channel, destination=destination, purpose=purpose
    )
    try:
        # Sent inside the transaction: if the gateway refuses, the new code never existed.
        deliver_code(channel=channel, destination=destination, body=_message(code, purpose))
    except DeliveryError as error:
        raise DeliveryFailed(
            _("We could not send the code. Please try again or choose another way."),
            channel=channel,
        ) from error
    return IssuedCode(
        channel=Channel(channel),
        destination=_masked(channel, destination),
        valid_until=device.valid_until,
    )


def seconds_until_resend(*, user: User, channel: str, purpose: str = Purpose.ACTIVATION) -> int:
    """How long the customer must wait before another code can be sent (0: now)."""
    device = _existing_code_device(user, channel, purpose)
    if device is None:
        return 0
    allowed, info = device.generate_is_allowed()
    if allowed:
        return 0
    return _seconds_until(info["next_generation_at"])


def _existing_code_device(user: User, channel: str, purpose: str) -> HashedCodeDevice | None:
    found = _device_lookup(user, channel, purpose)
    if found is None:
        return None
    model, lookup, _name = found
    return model.objects.filter(**lookup).first()


def has_live_code(*, user: User, channel: str, purpose: str = Purpose.ACTIVATION) -> bool:
    """Whether a code sent on ``channel`` is waiting to be entered."""
    if channel in (Channel.TOTP, Channel.PASSKEY):
        return True  # the customer makes the code (or the passkey's answer) when asked
    device = _existing_code_device(user, channel, purpose)
    return device is not None and device.has_live_code()


# What a code from the authenticator app may be used for; other purposes need their own code.
TOTP_PURPOSES = frozenset({Purpose.ACTIVATION, Purpose.FACTOR_CHANGE})


def _check_totp(user: User, code: str, purpose: str) -> CheckResult:
    if purpose not in TOTP_PURPOSES:
        raise ChannelUnavailable(_("The authenticator app cannot be used for this."))
    device = TOTPDevice.objects.devices_for_user(user, confirmed=True).select_for_update().first()
    if device is None:
        raise ChannelUnavailable(_("No authenticator app is set up on your account."))
    allowed, _info = device.verify_is_allowed()
    if not allowed:
        return CheckResult.THROTTLED
    # TOTPDevice counts failures itself and refuses a code from a time step already used.
    return CheckResult.OK if device.verify_token(normalize_code(code)) else CheckResult.INVALID


# No savepoint: no caller catches an error from here and carries on in the same transaction.
@transaction.atomic(savepoint=False)
def check_code(
    *, user: User, channel: str, code: str, purpose: str = Purpose.ACTIVATION
) -> CheckResult:
    """Check ``code`` against the user's current code on ``channel``, counting wrong guesses.

    The limits, and what they add up to against someone guessing:

    - a code takes ``VERIFICATION_MAX_ATTEMPTS_PER_CODE`` wrong guesses (5), then it is burned;
    - within one code the throttle spaces guesses exponentially (1, 2, 4, 8 s with factor 1);
      each new code starts afresh, throttle included, so the right code from a new message is
      never refused for the guesses made against the old one;
    - at most ``VERIFICATION_MAX_CODES_PER_HOUR_PER_CUSTOMER`` (and per destination) codes go
      out an hour for each purpose (10), so at most 10 x 5 = 50 guesses an hour reach a
      one-in-a-million code of one purpose: about one chance in 20,000 an hour, however the
      guesses are spread over codes (a code of one purpose is never accepted for another);
    - ``VERIFICATION_LOCKOUTS_BEFORE_REVIEW`` burned codes on one case (3, i.e. 15 guesses) hand
      the case to staff (``activation.services.retry``), so a case sees a person long before
      the odds move.

    The carried-over throttle added nothing to this bound; it only made the lock-out escalation
    unreachable, because its doubling delays soon outlasted a code's life.
    """
    if channel == Channel.TOTP:
        return _check_totp(user, code, purpose)
    device = _code_device(user, channel, purpose)
    # Checked before the code on purpose: answering a guess while throttled, even without
    # counting it, would let a script try codes as fast as it likes.
    allowed, _info = device.verify_is_allowed()
    if not allowed:
        return CheckResult.THROTTLED
    if device.token is None:
        return CheckResult.NO_CODE
    if timezone.now() >= device.valid_until:
        return CheckResult.EXPIRED
    if device.verify_token(code):
        return CheckResult.OK
    device.throttle_increment(commit=False)
    device.code_failures += 1
    result = CheckResult.INVALID
    if device.code_failures >= settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE:
        # The code is burned: a new one must be requested, and may be at once. Its throttle
        # goes with it, as there is nothing left to guess.
        device.token = None
        device.last_generated_timestamp = None
        device.throttle_reset(commit=False)
        result = CheckResult.BURNED
    device.save(
        update_fields=[
            "throttling_failure_timestamp",
            "throttling_failure_count",
            "code_failures",
            "token",
            "last_generated_timestamp",
        ]
    )
    return result


def lift_activation_lockout(*, user: User) -> None:
    """Forget the customer's activation codes, wrong guesses and throttles on every channel.

    Staff do this when they hand a locked-out case back; codes for other purposes (a password
    reset under way) are left as they are.
    """
    cleared = {
        "token": None,
        "code_failures": 0,
        "throttling_failure_count": 0,
        "throttling_failure_timestamp": None,
        "last_generated_timestamp": None,
    }
    for model in (SMSDevice, EmailDevice):
        model.objects.filter(user=user, purpose=Purpose.ACTIVATION).update(**cleared)
    TOTPDevice.objects.filter(user=user).update(
        throttling_failure_count=0, throttling_failure_timestamp=None
    )
