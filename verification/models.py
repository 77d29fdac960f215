from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext_lazy as _
from django_otp.models import CooldownMixin, SideChannelDevice, ThrottlingMixin
from django_otp.util import random_number_token
from phonenumber_field.modelfields import PhoneNumberField

from .normalize import normalize_code


class Channel(models.TextChoices):
    SMS = "sms", _("SMS")
    EMAIL = "email", _("E-mail")
    TOTP = "totp", _("Authenticator app")
    PASSKEY = "passkey", _("Passkey")


class Purpose(models.TextChoices):
    ACTIVATION = "activation", _("Activation")
    PASSWORD_RESET = "password_reset", _("Password reset")
    # Proves the customer before their authenticator app is set up, replaced or removed.
    FACTOR_CHANGE = "factor_change", _("Change of second factor")
    # A staff member's back-office sign-in (a passkey's challenge; their codes come from an app).
    STAFF_SIGN_IN = "staff_sign_in", _("Back-office sign-in")


class HashedCodeDevice(ThrottlingMixin, CooldownMixin, SideChannelDevice):
    """A destination that receives one-time codes (django-otp's side-channel device), hardened.

    The code is never stored: only a keyed digest of it, compared in constant time and consumed by
    a conditional update, so a leaked row reveals nothing and a code works once even when two
    requests race. Codes for different purposes live on different devices, so a password-reset
    code can never activate a credit line.
    """

    # Widened from SideChannelDevice's 16 characters to hold the digest instead of the code.
    token = models.CharField(max_length=64, blank=True, null=True)  # noqa: DJ001 (None: no code)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.ACTIVATION)
    code_failures = models.PositiveSmallIntegerField(
        default=0, help_text=_("Wrong guesses against the current code.")
    )

    # What ``generate_token`` changes, for callers that save the device themselves.
    NEW_CODE_FIELDS = (
        "token",
        "valid_until",
        "code_failures",
        "throttling_failure_count",
        "throttling_failure_timestamp",
    )

    class Meta:
        abstract = True

    def get_throttle_factor(self) -> int:
        return settings.VERIFICATION_THROTTLE_FACTOR

    def get_cooldown_duration(self) -> int:
        return settings.VERIFICATION_RESEND_COOLDOWN_SECONDS

    def _digest(self, code: str) -> str:
        return salted_hmac(
            f"verification.{type(self).__name__}.token", f"{self.pk}:{code}", algorithm="sha256"
        ).hexdigest()

    def generate_token(self, length: int = 6, valid_secs: int | None = None, commit: bool = True):
        """Make a new code, replacing any earlier one, and return it for delivery."""
        if valid_secs is None:
            valid_secs = settings.VERIFICATION_CODE_TTL_SECONDS
        code = random_number_token(length)
        self.token = self._digest(code)
        self.valid_until = timezone.now() + timedelta(seconds=valid_secs)
        # A fresh code starts with a clean slate: its own guesses, and no throttle carried over
        # from the code before it. What limits guessing across codes is explained in
        # ``verification.services.check_code``.
        self.code_failures = 0
        self.throttle_reset(commit=False)
        if commit:
            self.save(update_fields=list(self.NEW_CODE_FIELDS))
        return code

    def has_live_code(self) -> bool:
        return self.token is not None and timezone.now() < self.valid_until

    def verify_token(self, token: str) -> bool:
        """Consume the current code if ``token`` matches it; True for exactly one caller."""
        code = normalize_code(token)
        if not self.has_live_code() or not code:
            return False
        if not constant_time_compare(self._digest(code), self.token):
            return False
        # A used code also ends the throttle and the resend cooldown, as django-otp's mixins do.
        used = {
            "token": None,
            "valid_until": timezone.now(),
            "code_failures": 0,
            "throttling_failure_count": 0,
            "throttling_failure_timestamp": None,
            "last_generated_timestamp": None,
        }
        # Conditional update: of two requests racing with the same code, only one matches the row.
        consumed = (
            type(self)
            .objects.filter(pk=self.pk, token=self.token, valid_until__gt=used["valid_until"])
            .update(**used)
        )
        if consumed:
            for name, value in used.items():
                setattr(self, name, value)
        return bool(consumed)


class SMSDevice(HashedCodeDevice):
    """A phone that receives one-time codes by SMS."""

    phone_number = PhoneNumberField(_("phone number"))

    class Meta:
        verbose_name = _("SMS device")
        verbose_name_plural = _("SMS devices")


class EmailDevice(HashedCodeDevice):
    """An e-mail address that receives one-time codes."""

    email = models.EmailField(_("e-mail address"))

    class Meta:
        verbose_name = _("e-mail device")
        verbose_name_plural = _("e-mail devices")


class CodeDelivery(models.Model):
    """One code sent to one destination: what the per-hour limits count, purpose by purpose."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16)
    destination = models.CharField(max_length=254)
    # Each purpose has its own hourly budget, so codes asked for one purpose (a password reset
    # anyone can request for any number) never use up another's (the customer's activation).
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.ACTIVATION)
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["user", "purpose", "sent_at"]),
            models.Index(fields=["destination", "purpose", "sent_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.destination} at {self.sent_at:%Y-%m-%d %H:%M}"


class _NothingElseLimits(models.Model):
    """The end of django-otp's ``verify_is_allowed`` chain for a model that is not a device."""

    class Meta:
        abstract = True

    def verify_is_allowed(self):
        return (True, None)


class PasskeyChallenge(ThrottlingMixin, _NothingElseLimits):
    """A passkey request waiting for its answer: what a sent code is to SMS, for one purpose.

    One per user and purpose; a new request replaces the old, as a new code does. It is answered
    only from the browser session that asked for it (``binding``: a keyed digest of a random
    value kept in that session), works once (consumed by a conditional delete, so two racing
    answers cannot both pass) and until ``valid_until``. Wrong answers are counted and throttled
    as wrong codes are (``verification.passkeys``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    # The activation case a request for ``Purpose.ACTIVATION`` belongs to; it answers no other.
    case_id = models.BigIntegerField(null=True, blank=True)
    challenge = models.CharField(max_length=128)  # base64url, as sent to the browser
    binding = models.CharField(max_length=64)
    valid_until = models.DateTimeField()
    failures = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "purpose"], name="one_passkey_request_per_purpose"
            )
        ]

    def __str__(self) -> str:
        return f"passkey request of user {self.user_id} for {self.purpose}"

    def get_throttle_factor(self) -> int:
        return settings.VERIFICATION_THROTTLE_FACTOR


class AuthenticatorReset(models.Model):
    """A supervisor's request to reset a staff member's lost authenticator; another approves it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for approval")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    staff_member = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="authenticator_resets"
    )
    reason = models.CharField(_("reason"), max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # An approval opens a window in which the staff member alone sets up a new app (see
    # verification/enrolment.py); it closes when they have, or at this time.
    enrolment_expires_at = models.DateTimeField(null=True, blank=True)
    enrolled_at = models.DateTimeField(null=True, blank=True)
    # A keyed digest of the member's password hash when the reset was asked for: a password set
    # afterwards (by whoever could then use the window) no longer matches, so the approval is
    # refused or the window stays shut.
    password_fingerprint = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        verbose_name = _("authenticator reset")
        verbose_name_plural = _("authenticator resets")
        constraints = [
            # One open request per staff member: a second would only race the first.
            models.UniqueConstraint(
                fields=["staff_member"],
                condition=models.Q(status="pending"),
                name="one_pending_authenticator_reset_per_staff_member",
            )
        ]

    def __str__(self) -> str:
        return f"reset of {self.staff_member} ({self.status})"
