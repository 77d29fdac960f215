"""Account changes that need a code: resetting a forgotten password."""

from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from accounts.backends import parse_phone_number
from accounts.models import User
from verification.models import Channel, Purpose
from verification.services import CheckResult, VerificationError, check_code, issue_code


def _customer_with_phone(phone_number: str) -> User | None:
    e164 = parse_phone_number(phone_number)
    if e164 is None:
        return None
    return User.objects.filter(phone_number=e164, is_active=True).first()


def request_password_reset(*, phone_number: str) -> None:
    """Text a reset code if the number belongs to an account; say nothing either way."""
    user = _customer_with_phone(phone_number)
    if user is None:
        return
    try:
        issue_code(user=user, channel=Channel.SMS, purpose=Purpose.PASSWORD_RESET)
    except VerificationError:
        # Cooldown, hourly limit or gateway trouble: the page must not tell an attacker which.
        return


@transaction.atomic
def reset_password_with_code(*, phone_number: str, code: str, new_password: str) -> bool:
    """Set a new password if ``code`` is the reset code just sent to ``phone_number``."""
    user = _customer_with_phone(phone_number)
    if user is None:
        return False
    if check_code(user=user, channel=Channel.SMS, code=code, purpose=Purpose.PASSWORD_RESET) != (
        CheckResult.OK
    ):
        return False
    validate_password(new_password, user)
    user.set_password(new_password)
    user.save(update_fields=["password"])
    return True
