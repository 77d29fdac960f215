"""Account changes: resetting a forgotten password by SMS code, creating staff members."""

from typing import NamedTuple

from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.backends import parse_phone_number
from accounts.models import User
from accounts.roles import ROLES
from audit.services import record_system_event
from portal.queue import enqueue_on_commit
from risk.facts import ClientFacts
from risk.models import Decision, Moment
from risk.services import evaluate
from verification.backup_codes import issue_initial_backup_codes
from verification.models import Channel, Purpose
from verification.services import CheckResult, VerificationError, check_code, issue_code


@transaction.atomic
def pass_sign_in_checkpoint(*, user: User, facts: ClientFacts) -> bool:
    """Evaluate a customer's sign-in (after the password checked out); False if it is blocked.

    Only a staff-kept block list refuses a sign-in; everything else the checkpoint sees at
    sign-in counts towards the next code request and submit, where it is decided on.
    """
    assessment = evaluate(moment=Moment.SIGN_IN, customer=user, facts=facts)
    return assessment.decision != Decision.BLOCK


def _customer_with_phone(phone_number: str) -> User | None:
    e164 = parse_phone_number(phone_number)
    if e164 is None:
        return None
    # Staff never reset a password by SMS: a supervisor does it in the back office, audited.
    return User.objects.filter(phone_number=e164, is_active=True, is_staff=False).first()


def request_password_reset(*, phone_number: str) -> None:
    """Queue a reset code for ``phone_number``, whether or not it belongs to an account.

    The request does the same work for every valid number and never waits for the SMS gateway,
    so its timing does not tell which numbers have an account. The worker finds the customer.
    """
    e164 = parse_phone_number(phone_number)
    if e164 is None:
        return
    enqueue_on_commit("accounts.tasks.send_password_reset_code", phone_number=e164)


def send_password_reset_code(*, phone_number: str) -> None:
    """Text a reset code if the number belongs to a customer; say nothing either way."""
    user = _customer_with_phone(phone_number)
    if user is None:
        return
    try:
        issue_code(user=user, channel=Channel.SMS, purpose=Purpose.PASSWORD_RESET)
    except VerificationError:
        # Cooldown, hourly limit or gateway trouble: the customer may simply ask again.
        return


@transaction.atomic
def reset_password_with_code(*, phone_number: str, code: str, new_password: str) -> User | None:
    """Set a new password if ``code`` is the reset code just sent to ``phone_number``.

    An authenticator app still being set up is dropped with the old password. Return the
    customer whose password it was, or None if nothing changed.
    """
    user = _customer_with_phone(phone_number)
    if user is None:
        return None
    if check_code(user=user, channel=Channel.SMS, code=code, purpose=Purpose.PASSWORD_RESET) != (
        CheckResult.OK
    ):
        return None
    validate_password(new_password, user)
    user.set_password(new_password)
    user.password_reset_at = timezone.now()
    user.save(update_fields=["password", "password_reset_at"])
    # An app set up but never confirmed may have been started by whoever had the old password;
    # confirming its key after the reset would hand them a factor.
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return user


class NewStaffMember(NamedTuple):
    user: User
    device: TOTPDevice
    # To be shown once, by whoever created the member: no page or event shows them again.
    backup_codes: list[str]


@transaction.atomic
def create_staff_user(
    *, username: str, role: str, password: str, email: str = "", first_name: str = ""
) -> NewStaffMember:
    """Create a staff member in one role, with the authenticator device they must sign in with
    and one-time backup codes for the day the app is out of reach."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    user = User(username=username, email=email, first_name=first_name, is_staff=True)
    validate_password(password, user)
    user.set_password(password)
    user.save()
    user.groups.add(Group.objects.get(name=role))
    device = TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=True)
    codes = issue_initial_backup_codes(user=user)
    record_system_event(
        kind="staff.created", data={"username": username, "role": role, "user_id": user.pk}
    )
    return NewStaffMember(user, device, codes)
