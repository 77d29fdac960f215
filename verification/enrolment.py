"""A staff member whose lost authenticator was reset sets up the new one alone.

Approving a reset (``factors.approve_authenticator_reset``) removes the member's app and opens a
window of ``BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS``. Within it, the member's password alone
takes them to one back-office page (and no other), where a key made for them then is scanned and
confirmed with a code from it. No supervisor ever sees that key, so neither the one who asked nor
the one who approved holds a factor of the member's. The window is used once, closes at its
deadline, and stays shut if the member's password changed after the approval: whoever set the
new one (a superuser) would otherwise get the account by enrolling first.
"""

import enum
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.services import record_system_event
from portal.errors import DomainError

from .models import AuthenticatorReset
from .normalize import normalize_code


class EnrolmentResult(enum.StrEnum):
    OK = "ok"
    WINDOW_CLOSED = "window_closed"
    NOTHING_PENDING = "nothing_pending"
    WRONG_CODE = "wrong_code"


WINDOW_CLOSED_MESSAGE = gettext_lazy(
    "The time to set up your authenticator app has ended. Ask a supervisor for a reset."
)


class PendingEnrolment(NamedTuple):
    reset: AuthenticatorReset
    device: TOTPDevice


class EnrolmentClosed(DomainError):
    code = "authenticator_enrolment_closed"
    http_status = 403


def password_fingerprint(user: User) -> str:
    """A keyed digest of the user's password hash, which changes whenever the password does.

    Django re-hashes a password when its hasher's settings change, at the next sign-in; a window
    open across such an upgrade then closes and the reset must be asked for again.
    """
    return salted_hmac(
        "verification.enrolment.password", user.password, algorithm="sha256"
    ).hexdigest()


def open_window(reset: AuthenticatorReset, member: User, *, now: datetime) -> None:
    """Set the enrolment window of a reset being approved (the caller saves it)."""
    reset.enrolment_expires_at = now + timedelta(
        hours=settings.BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS
    )
    reset.password_fingerprint = password_fingerprint(member)


def _is_open(reset: AuthenticatorReset | None, member: User) -> bool:
    return (
        reset is not None
        and reset.staff_member_id == member.pk
        and reset.status == AuthenticatorReset.Status.APPROVED
        and reset.enrolled_at is None
        and reset.enrolment_expires_at is not None
        and timezone.now() < reset.enrolment_expires_at
        and member.is_active
        and member.is_staff
        and constant_time_compare(reset.password_fingerprint, password_fingerprint(member))
        # A member who has an app signs in with it; the window is for one who has none.
        and not TOTPDevice.objects.filter(user=member, confirmed=True).exists()
    )


def open_enrolment(member: User) -> AuthenticatorReset | None:
    """The approved reset whose window lets ``member`` set up a new app now, if any."""
    reset = (
        AuthenticatorReset.objects.filter(
            staff_member=member,
            status=AuthenticatorReset.Status.APPROVED,
            enrolled_at__isnull=True,
            enrolment_expires_at__gt=timezone.now(),
        )
        .order_by("-decided_at")
        .first()
    )
    return reset if _is_open(reset, member) else None


def _locked_open_window(member: User, reset_id: int) -> AuthenticatorReset | None:
    # Locked so that two sessions finishing at once cannot both use the window.
    reset = AuthenticatorReset.objects.select_for_update().filter(pk=reset_id).first()
    return reset if _is_open(reset, member) else None


def _audit_data(reset: AuthenticatorReset, member: User) -> dict:
    return {"reset": reset.pk, "user_id": member.pk, "username": member.get_username()}


@transaction.atomic
def start_enrolment(
    *, member: User, reset_id: int, device_id: int | None = None, ip: str | None = None
) -> PendingEnrolment:
    """Return the new, unconfirmed app this sign-in sets up, making it (fresh key) if need be.

    ``device_id`` is the device an earlier page of the same sign-in made; any other pending
    device of the member's stops counting, so one key is in play at a time.
    """
    reset = _locked_open_window(member, reset_id)
    if reset is None:
        raise EnrolmentClosed(str(WINDOW_CLOSED_MESSAGE))
    if device_id is not None:
        device = TOTPDevice.objects.filter(pk=device_id, user=member, confirmed=False).first()
        if device is not None:
            return PendingEnrolment(reset, device)
    TOTPDevice.objects.filter(user=member, confirmed=False).delete()
    device = TOTPDevice.objects.create(user=member, name=_("Authenticator app"), confirmed=False)
    record_system_event(
        kind="staff.authenticator_enrolment_started",
        actor=member,
        data=_audit_data(reset, member),
        ip=ip,
    )
    return PendingEnrolment(reset, device)


@transaction.atomic
def complete_enrolment(
    *, member: User, reset_id: int, device_id: int, code: str, ip: str | None = None
) -> EnrolmentResult:
    """Make the pending app the member's, given a code from it, and close the window.

    Returns a result instead of raising on a wrong code, so the device's failure count (its
    throttle) is kept.
    """
    reset = _locked_open_window(member, reset_id)
    if reset is None:
        return EnrolmentResult.WINDOW_CLOSED
    device = (
        TOTPDevice.objects.select_for_update()
        .filter(pk=device_id, user=member, confirmed=False)
        .first()
    )
    if device is None:
        return EnrolmentResult.NOTHING_PENDING
    if not device.verify_token(normalize_code(code)):
        return EnrolmentResult.WRONG_CODE
    TOTPDevice.objects.filter(user=member).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    reset.enrolled_at = timezone.now()
    reset.save(update_fields=["enrolled_at"])
    record_system_event(
        kind="staff.authenticator_enrolled",
        actor=member,
        data=_audit_data(reset, member),
        ip=ip,
    )
    return EnrolmentResult.OK
