"""Set up, replace and remove authenticator apps: never on a password alone.

Customers prove themselves with a code from their current app, or (no app yet, or the phone with
it is lost) with an SMS code sent for this purpose only. Staff manage their app only inside the
back office: a replacement needs a code from the old app and one from the new; a staff member who
lost theirs gets a reset that one supervisor requests and a different supervisor approves, after
which the member alone sets up the new app (``verification.enrolment``). A superuser's app is
never reset here: no supervisor may open a way into an account that administers everyone's.
Every change goes on the system audit trail, with who made it.

The services return a result instead of raising on a wrong code: a raise would roll back the
failure count the check just wrote, and with it the throttle that limits guessing.
"""

import enum
from datetime import datetime

from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from accounts.models import User
from api.models import StaffToken
from audit.services import record_system_event
from portal.errors import DomainError

from . import enrolment, passkeys, reset_history
from .models import AuthenticatorReset, Channel, Purpose
from .normalize import normalize_code
from .services import CheckResult, IssuedCode, check_code, issue_code

# Who may request and approve a staff member's authenticator reset (two different people).
RESET_APPROVER_ROLE = reset_history.SUPERVISOR_ROLE


class FactorChangeResult(enum.StrEnum):
    OK = "ok"
    NOTHING_PENDING = "nothing_pending"
    WRONG_NEW_CODE = "wrong_new_code"
    WRONG_PROOF = "wrong_proof"


class FactorChangeNotAllowed(DomainError):
    code = "factor_change_not_allowed"
    http_status = 403


class ResetNotAllowed(DomainError):
    code = "authenticator_reset_not_allowed"
    http_status = 409


def _require_customer(user: User) -> None:
    # Staff credentials are managed in the back office only, never from a customer page.
    if not user.is_authenticated or user.is_staff:
        raise FactorChangeNotAllowed(
            _("Staff accounts manage their authenticator in the back office.")
        )


def _require_staff(user: User) -> None:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        raise FactorChangeNotAllowed(_("Only staff members have a back-office authenticator."))


def may_approve_resets(user: User) -> bool:
    """Whether ``user`` holds the role that asks for and decides authenticator resets."""
    return user.groups.filter(name=RESET_APPROVER_ROLE).exists()


def _require_reset_approver(user: User) -> None:
    _require_staff(user)
    if not may_approve_resets(user):
        raise FactorChangeNotAllowed(
            _("Only supervisors can reset a staff member's authenticator.")
        )


def confirmed_authenticator(user: User) -> TOTPDevice | None:
    """The authenticator app the user signs in or verifies with, if any."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


ANY_SESSION = object()


def _pending(user: User, device_id) -> models.QuerySet:
    pending = TOTPDevice.objects.filter(user=user, confirmed=False)
    if device_id is ANY_SESSION:
        return pending
    # A customer's key: only the one this session started, and only while it is fresh.
    if not isinstance(device_id, int) or isinstance(device_id, bool):
        return pending.none()
    return pending.filter(pk=device_id, created_at__gt=timezone.now() - enrolment.KEY_HOLD)


def pending_authenticator(user: User, *, device_id=ANY_SESSION) -> TOTPDevice | None:
    """The app being set up and not yet confirmed, if any (``device_id``: the one a customer's
    session started, at most ``enrolment.KEY_HOLD`` ago)."""
    return _pending(user, device_id).first()


def _locked_device(user: User, *, confirmed: bool) -> TOTPDevice | None:
    return TOTPDevice.objects.select_for_update().filter(user=user, confirmed=confirmed).first()


def _start(user: User) -> TOTPDevice:
    """Return the app being set up: the one started moments ago (a reload), else a fresh key.

    An unconfirmed device verifies nothing anywhere, so creating one needs no proof. One left
    pending for longer is dropped: its key may have been shown to someone long gone, such as
    whoever had the password before it was reset.
    """
    now = timezone.now()
    pending = list(
        TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("pk")
    )
    recent = [
        device
        for device in pending
        if device.created_at is not None and device.created_at > now - enrolment.KEY_HOLD
    ]
    if recent:
        return recent[-1]
    if pending:
        TOTPDevice.objects.filter(pk__in=[device.pk for device in pending]).delete()
    return TOTPDevice.objects.create(user=user, name=_("Authenticator app"), confirmed=False)


def _new_code_matches(device: TOTPDevice | None, code: str) -> bool:
    return device is not None and device.verify_token(normalize_code(code))


def _confirm(pending: TOTPDevice) -> bool:
    """Make ``pending`` the user's only app; return whether it replaced one.

    The app dates from now, when it became a factor: the checkpoint trusts only apps the
    customer has had for a while (``risk.services.checkpoint.established_strong_channels``),
    and a key started long ago but confirmed minutes ago is no such app.
    """
    replaced, _by_model = TOTPDevice.objects.filter(
        user_id=pending.user_id, confirmed=True
    ).delete()
    pending.confirmed = True
    pending.created_at = timezone.now()
    pending.save(update_fields=["confirmed", "created_at"])
    return bool(replaced)


# --- Customers ---------------------------------------------------------------------------------


def send_factor_change_code(*, user: User) -> IssuedCode:
    """Text the customer a code that works only to change their authenticator app."""
    _require_customer(user)
    return issue_code(user=user, channel=Channel.SMS, purpose=Purpose.FACTOR_CHANGE)


def _proof_holds(user: User, proof_channel: str, proof_code: str) -> bool:
    available = {
        Channel.TOTP: confirmed_authenticator(user) is not None,
        Channel.SMS: bool(user.phone_number),
    }
    # Asked first: check_code raising for a channel the user lacks would void this transaction.
    if not available.get(proof_channel, False):
        return False
    result = check_code(
        user=user, channel=proof_channel, code=proof_code, purpose=Purpose.FACTOR_CHANGE
    )
    return result == CheckResult.OK


@transaction.atomic
def start_totp_enrollment(*, user: User) -> TOTPDevice:
    """Return the customer's unconfirmed authenticator device (see ``_start``)."""
    _require_customer(user)
    return _start(user)


@transaction.atomic
def confirm_totp_enrollment(
    *,
    user: User,
    device_id: int | None,
    code: str,
    proof_channel: str,
    proof_code: str,
    ip: str | None = None,
) -> FactorChangeResult:
    """Make the pending app the customer's, given a code from it and proof of the current factor.

    The new app's code is checked first, so a typo there does not use up the SMS code.
    """
    _require_customer(user)
    pending = _pending(user, device_id).select_for_update().first()
    if pending is None:
        return FactorChangeResult.NOTHING_PENDING
    if not _new_code_matches(pending, code):
        return FactorChangeResult.WRONG_NEW_CODE
    if not _proof_holds(user, proof_channel, proof_code):
        return FactorChangeResult.WRONG_PROOF
    replaced = _confirm(pending)
    record_system_event(
        kind="factor.totp_replaced" if replaced else "factor.totp_enrolled",
        actor=user,
        data={"user_id": user.pk, "proof": proof_channel},
        ip=ip,
    )
    return FactorChangeResult.OK


@transaction.atomic
def remove_totp(
    *, user: User, proof_channel: str, proof_code: str, ip: str | None = None
) -> FactorChangeResult:
    """Remove the customer's authenticator app, given proof of the current factor."""
    _require_customer(user)
    if not _proof_holds(user, proof_channel, proof_code):
        return FactorChangeResult.WRONG_PROOF
    TOTPDevice.objects.filter(user=user).delete()
    record_system_event(
        kind="factor.totp_removed",
        actor=user,
        data={"user_id": user.pk, "proof": proof_channel},
        ip=ip,
    )
    return FactorChangeResult.OK


@transaction.atomic
def open_passkey_registration(
    *, user: User, proof_channel: str, proof_code: str, binding: str
) -> FactorChangeResult:
    """Let this session add one passkey for a few minutes, given proof of the current factor."""
    _require_customer(user)
    if not _proof_holds(user, proof_channel, proof_code):
        return FactorChangeResult.WRONG_PROOF
    passkeys.open_registration(user=user, binding=binding)
    return FactorChangeResult.OK


@transaction.atomic
def remove_passkey(
    *, user: User, passkey_id: int, proof_channel: str, proof_code: str, ip: str | None = None
) -> FactorChangeResult:
    """Remove one of the customer's passkeys, given proof of the current factor."""
    _require_customer(user)
    if not _proof_holds(user, proof_channel, proof_code):
        return FactorChangeResult.WRONG_PROOF
    if not passkeys.remove(user=user, passkey_id=passkey_id, ip=ip):
        return FactorChangeResult.NOTHING_PENDING
    return FactorChangeResult.OK


def complete_passkey_registration(
    *, user: User, binding: str, name: str, response: str, ip: str | None = None
) -> passkeys.PasskeyCheck:
    _require_customer(user)
    return passkeys.complete_registration(
        user=user, binding=binding, name=name, response=response, ip=ip
    )


# --- Staff: passkeys, added and removed with a code from the app ---------------------------


def complete_staff_passkey_registration(
    *, staff: User, binding: str, name: str, response: str, ip: str | None = None
) -> passkeys.PasskeyCheck:
    _require_staff(staff)
    return passkeys.complete_registration(
        user=staff, binding=binding, name=name, response=response, ip=ip
    )


def _staff_app_code_holds(staff: User, code: str) -> bool:
    return _new_code_matches(_locked_device(staff, confirmed=True), code)


@transaction.atomic
def staff_app_code_holds(*, staff: User, code: str) -> bool:
    """A fresh code from the staff member's authenticator app, typed again for a sensitive step
    (a new API token); used up once right, a wrong one throttled like any other."""
    _require_staff(staff)
    return _staff_app_code_holds(staff, code)


@transaction.atomic
def open_staff_passkey_registration(
    *, staff: User, current_code: str, binding: str
) -> FactorChangeResult:
    _require_staff(staff)
    if not _staff_app_code_holds(staff, current_code):
        return FactorChangeResult.WRONG_PROOF
    passkeys.open_registration(user=staff, binding=binding)
    return FactorChangeResult.OK


@transaction.atomic
def remove_staff_passkey(
    *, staff: User, passkey_id: int, current_code: str, ip: str | None = None
) -> FactorChangeResult:
    _require_staff(staff)
    if not _staff_app_code_holds(staff, current_code):
        return FactorChangeResult.WRONG_PROOF
    if not passkeys.remove(user=staff, passkey_id=passkey_id, ip=ip):
        return FactorChangeResult.NOTHING_PENDING
    return FactorChangeResult.OK


# --- Staff: replacing one's own app ------------------------------------------------------------


@transaction.atomic
def start_staff_authenticator_replacement(*, staff: User) -> TOTPDevice:
    """Return the staff member's new, unconfirmed authenticator device (fresh secret)."""
    _require_staff(staff)
    return _start(staff)


@transaction.atomic
def replace_staff_authenticator(
    *, staff: User, current_code: str, new_code: str, ip: str | None = None
) -> FactorChangeResult:
    """Swap the staff member's app for the pending one: a code from each is needed."""
    _require_staff(staff)
    pending = _locked_device(staff, confirmed=False)
    if pending is None:
        return FactorChangeResult.NOTHING_PENDING
    current = _locked_device(staff, confirmed=True)
    if not _new_code_matches(pending, new_code):
        return FactorChangeResult.WRONG_NEW_CODE
    if not _new_code_matches(current, current_code):
        return FactorChangeResult.WRONG_PROOF
    _confirm(pending)
    record_system_event(
        kind="staff.authenticator_replaced",
        actor=staff,
        data={"user_id": staff.pk, "username": staff.get_username()},
        ip=ip,
    )
    return FactorChangeResult.OK


# --- Staff: a lost app, reset with four eyes ---------------------------------------------------


def _require_seasoned_supervisor(person: User, *, at: datetime, who: str) -> None:
    """Refuse a reset driven by someone made a supervisor (or superuser) shortly before ``at``.

    Whoever can grant the role could otherwise make themselves the second pair of eyes.
    """
    limit = reset_history.role_age_limit()
    granted_at = reset_history.made_supervisor_since(person.pk, at - limit)
    if granted_at is not None:
        raise ResetNotAllowed(
            _(
                "%(who)s %(name)s was made a supervisor at %(when)s, less than %(hours)s hours "
                "before: someone else must handle this reset."
            )
            % {
                "who": who,
                "name": person.get_username(),
                "when": timezone.localtime(granted_at).strftime("%Y-%m-%d %H:%M"),
                "hours": f"{limit.total_seconds() / 3600:g}",
            }
        )


@transaction.atomic
def request_authenticator_reset(
    *, staff: User, staff_member_id: int, reason: str, ip: str | None = None
) -> AuthenticatorReset:
    """A supervisor asks to reset another staff member's lost authenticator app."""
    _require_reset_approver(staff)
    _require_seasoned_supervisor(staff, at=timezone.now(), who=_("The requester"))
    reason = (reason or "").strip()
    if not reason:
        raise ResetNotAllowed(_("Give a reason: it goes on the audit trail."))
    member = User.objects.filter(pk=staff_member_id, is_staff=True).first()
    if member is None:
        raise ResetNotAllowed(_("There is no staff member with that id."))
    _require_resettable(member)
    if member.pk == staff.pk:
        raise FactorChangeNotAllowed(_("Another supervisor must ask for a reset of your own app."))
    if AuthenticatorReset.objects.filter(
        staff_member=member, status=AuthenticatorReset.Status.PENDING
    ).exists():
        raise ResetNotAllowed(_("A reset for this staff member is already waiting for approval."))
    # The password as it is now: the window the approval opens is only for this password, so
    # one set in between (by a superuser, say) opens nothing.
    reset = AuthenticatorReset.objects.create(
        staff_member=member,
        reason=reason,
        requested_by=staff,
        password_fingerprint=enrolment.password_fingerprint(member),
    )
    record_system_event(
        kind="staff.authenticator_reset_requested",
        actor=staff,
        data={
            "reset": reset.pk,
            "user_id": member.pk,
            "username": member.get_username(),
            "requested_by": staff.get_username(),
            "reason": reason,
        },
        ip=ip,
    )
    return reset


def _require_resettable(member: User) -> None:
    if member.is_superuser:
        raise ResetNotAllowed(
            _("A superuser's authenticator app cannot be reset in the back office.")
        )


def _lock_pending_reset(reset_id: int, staff: User) -> AuthenticatorReset:
    _require_reset_approver(staff)
    reset = AuthenticatorReset.objects.select_for_update().filter(pk=reset_id).first()
    if reset is None or reset.status != AuthenticatorReset.Status.PENDING:
        raise ResetNotAllowed(_("This reset is not waiting for approval."))
    # Four eyes: neither the supervisor who asked nor the staff member may decide.
    if staff.pk in (reset.requested_by_id, reset.staff_member_id):
        raise FactorChangeNotAllowed(_("A different supervisor must decide this reset."))
    return reset


def _decide(reset: AuthenticatorReset, staff: User, status: str) -> None:
    reset.status = status
    reset.decided_by = staff
    reset.decided_at = timezone.now()
    reset.save(update_fields=["status", "decided_by", "decided_at"])


@transaction.atomic
def approve_authenticator_reset(
    *, reset_id: int, staff: User, ip: str | None = None
) -> AuthenticatorReset:
    """A second supervisor approves: the old app stops working and the member may set up a new one.

    No device is made here, so no supervisor ever sees the new key: the member's next back-office
    sign-in with their password, within the enrolment window, makes and confirms it. Refused
    (and nothing changes) if the member's password changed since the request, or if the
    requester or approver was made a supervisor shortly before acting.
    """
    reset = _lock_pending_reset(reset_id, staff)
    member = User.objects.select_for_update().get(pk=reset.staff_member_id)
    # Checked again: the member may have been made a superuser while the request waited.
    _require_resettable(member)
    _require_seasoned_supervisor(staff, at=timezone.now(), who=_("The approver"))
    _require_seasoned_supervisor(reset.requested_by, at=reset.requested_at, who=_("The requester"))
    if not enrolment.password_unchanged_since_request(reset, member):
        raise ResetNotAllowed(
            _(
                "%(name)s's password was changed after this reset was asked for. Reject it, "
                "find out from %(name)s who changed it, and ask for a new reset if need be."
            )
            % {"name": member.get_username()}
        )
    TOTPDevice.objects.filter(user=member).delete()
    # The backup codes go too: whoever may hold them (the phone and the printout are often lost
    # together) must not get in, and the member's sign-in must find no factor to reach the
    # set-up page. With the new app set up, they make new codes themselves.
    StaticDevice.objects.filter(user=member).delete()
    # And the passkeys: a reset starts the member again from the app alone.
    WebAuthnCredential.objects.filter(user=member).delete()
    # And the member's API tokens: whoever holds the lost phone or laptop may hold those too.
    StaffToken.objects.filter(user=member, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=staff
    )
    _decide(reset, staff, AuthenticatorReset.Status.APPROVED)
    # An earlier approval's window that was never used closes: one way in at a time.
    AuthenticatorReset.objects.filter(
        staff_member=member,
        status=AuthenticatorReset.Status.APPROVED,
        enrolled_at__isnull=True,
        enrolment_expires_at__gt=reset.decided_at,
    ).exclude(pk=reset.pk).update(enrolment_expires_at=reset.decided_at)
    enrolment.open_window(reset, now=reset.decided_at)
    reset.save(update_fields=["enrolment_expires_at"])
    record_system_event(
        kind="staff.authenticator_reset_approved",
        actor=staff,
        data={
            "reset": reset.pk,
            "user_id": member.pk,
            "username": member.get_username(),
            "requested_by": reset.requested_by.get_username(),
            "approved_by": staff.get_username(),
            "enrolment_expires_at": reset.enrolment_expires_at,
        },
        ip=ip,
    )
    return reset


@transaction.atomic
def reject_authenticator_reset(
    *, reset_id: int, staff: User, ip: str | None = None
) -> AuthenticatorReset:
    """A second supervisor turns the request down; nothing about the app changes."""
    reset = _lock_pending_reset(reset_id, staff)
    _decide(reset, staff, AuthenticatorReset.Status.REJECTED)
    record_system_event(
        kind="staff.authenticator_reset_rejected",
        actor=staff,
        data={
            "reset": reset.pk,
            "user_id": reset.staff_member_id,
            "rejected_by": staff.get_username(),
        },
        ip=ip,
    )
    return reset
