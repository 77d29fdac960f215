"""A staff member whose lost authenticator was reset sets up the new one alone.

Approving a reset (``factors.approve_authenticator_reset``) removes the member's app and opens a
window of ``BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS``. Within it, the member's password alone
takes them to one back-office page (and no other), where a key made for them then is scanned and
confirmed with a code from it. No supervisor ever sees that key, so neither the one who asked nor
the one who approved holds a factor of the member's. The window is used once, closes at its
deadline, and stays shut if the member's password changed after the reset was asked for: whoever
set the new one (a superuser) would otherwise get the account by enrolling first.

One key is in play at a time, and it belongs to the session that asked for it: reloading shows
the same key, and another session (the member's other browser, or anyone else with the password)
is told when and from where set-up started instead of silently swapping the key. After
``KEY_HOLD`` that other session may start again, explicitly and on the audit trail: a browser
closed mid-way must not lock the member out for the rest of the window.
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
from audit.models import SystemEvent
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


# How long a key being set up belongs to the session that asked for it, whoever else signs in.
KEY_HOLD = timedelta(minutes=15)


class PendingEnrolment(NamedTuple):
    """The key this session sets up, or (``device`` None) who holds the window's key instead."""

    reset: AuthenticatorReset
    device: TOTPDevice | None
    started_at: datetime | None = None
    started_from: str | None = None
    restart_from: datetime | None = None


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


def password_unchanged_since_request(reset: AuthenticatorReset, member: User) -> bool:
    """Whether ``member``'s password is the one they had when the reset was asked for."""
    return bool(reset.password_fingerprint) and constant_time_compare(
        reset.password_fingerprint, password_fingerprint(member)
    )


def open_window(reset: AuthenticatorReset, *, now: datetime) -> None:
    """Set the enrolment window of a reset being approved (the caller saves it)."""
    reset.enrolment_expires_at = now + timedelta(
        hours=settings.BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS
    )


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
        and password_unchanged_since_request(reset, member)
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


def _held_elsewhere(reset: AuthenticatorReset, holder: TOTPDevice) -> PendingEnrolment:
    started = (
        SystemEvent.objects.filter(kind__in=START_KINDS, data__reset=reset.pk)
        .order_by("-seq")
        .first()
    )
    started_at = holder.created_at or (started.created_at if started else None)
    return PendingEnrolment(
        reset,
        None,
        started_at=started_at,
        started_from=started.ip_address if started else None,
        restart_from=started_at + KEY_HOLD if started_at else None,
    )


START_KINDS = ("staff.authenticator_enrolment_started", "staff.authenticator_enrolment_restarted")


@transaction.atomic
def start_enrolment(
    *,
    member: User,
    reset_id: int,
    device_id: int | None = None,
    start_again: bool = False,
    ip: str | None = None,
) -> PendingEnrolment:
    """Return the new, unconfirmed app this session sets up, making it (fresh key) if need be.

    ``device_id`` is the device an earlier page of the same session made. If another session's
    key is pending, it is left alone and the result names no device; with ``start_again``, and
    once ``KEY_HOLD`` has passed since that key was made, it is replaced (and audited as such).
    """
    reset = _locked_open_window(member, reset_id)
    if reset is None:
        raise EnrolmentClosed(str(WINDOW_CLOSED_MESSAGE))
    pending = list(
        TOTPDevice.objects.select_for_update().filter(user=member, confirmed=False).order_by("pk")
    )
    mine = next((device for device in pending if device.pk == device_id), None)
    if mine is not None:
        return PendingEnrolment(reset, mine)
    data = _audit_data(reset, member)
    kind = "staff.authenticator_enrolment_started"
    if pending:
        held = _held_elsewhere(reset, pending[-1])
        if not start_again or (held.restart_from and timezone.now() < held.restart_from):
            return held
        kind = "staff.authenticator_enrolment_restarted"
        data["replaced_key_started_at"] = held.started_at
        data["replaced_key_started_from"] = held.started_from
        TOTPDevice.objects.filter(pk__in=[device.pk for device in pending]).delete()
    device = TOTPDevice.objects.create(user=member, name=_("Authenticator app"), confirmed=False)
    record_system_event(kind=kind, actor=member, data=data, ip=ip)
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
