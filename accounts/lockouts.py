"""Sign-in lock-outs for supervisors: which (address, account) pairs django-axes refuses now,
and lifting one, on the audit trail."""

import re
from dataclasses import dataclass
from datetime import datetime

from axes.helpers import get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.utils import reset as reset_axes_attempts
from django.db import transaction
from django.db.models import Max, Sum
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _

from accounts.masking import mask_phone_number
from accounts.models import User
from accounts.roles import can
from audit.services import record_system_event
from portal.errors import DomainError, NotPermitted, ReasonRequired

PERMISSION = "lift_sign_in_lockout"


class LockoutNotFound(DomainError):
    code = "lockout_not_found"
    http_status = 404


@dataclass(frozen=True)
class SignInLockout:
    """One (address, account) pair that has used up its sign-in attempts."""

    attempt_id: int  # the pair's newest attempt row: how the page names the pair without PII
    account: str  # as staff see it: the username, a masked number or a fingerprint of the text
    user_id: int | None  # None: the text named no account (someone guessing)
    ip_address: str | None
    failures: int
    last_attempt: datetime


# A phone number in E.164 form: what accounts.backends.sign_in_identity gives for a number.
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def _account_label(identity: str, *, names_an_account: bool) -> str:
    """Name the account a lock-out is for, as staff may see it and the audit trail may keep it.

    The identity is an account's username, or for text naming no account its E.164 number or
    the text itself (accounts.backends.sign_in_identity). Numbers are masked as elsewhere. Other
    text naming no account is often a password typed in the wrong box: it is shown only as a
    short keyed fingerprint, the same for the same text, so repeated guesses can be told apart
    without anyone reading what was typed.
    """
    if identity.startswith("+") and (names_an_account or E164.fullmatch(identity)):
        return mask_phone_number(identity)
    if names_an_account:
        return identity
    return "#" + salted_hmac("accounts.lockouts.typed_text", identity).hexdigest()[:10]


def _lockouts(**pair: str | None) -> list[SignInLockout]:
    since = timezone.now() - get_cool_off()
    pairs = list(
        AccessAttempt.objects.filter(attempt_time__gte=since, username__isnull=False, **pair)
        .values("username", "ip_address")
        .annotate(
            failures=Sum("failures_since_start"),
            last_attempt=Max("attempt_time"),
            attempt_id=Max("id"),
        )
        .filter(failures__gte=get_failure_limit(None, None))
        .order_by("-last_attempt")
    )
    user_ids = dict(
        User.objects.filter(username__in={pair["username"] for pair in pairs}).values_list(
            "username", "id"
        )
    )
    return [
        SignInLockout(
            attempt_id=pair["attempt_id"],
            account=_account_label(pair["username"], names_an_account=pair["username"] in user_ids),
            user_id=user_ids.get(pair["username"]),
            ip_address=pair["ip_address"],
            failures=pair["failures"],
            last_attempt=pair["last_attempt"],
        )
        for pair in pairs
    ]


def current_sign_in_lockouts() -> list[SignInLockout]:
    """The pairs django-axes refuses now, newest first, counted as django-axes counts them."""
    return _lockouts()


@transaction.atomic
def lift_sign_in_lockout(
    *, staff: User, attempt_id: int, reason: str, ip: str | None = None
) -> SignInLockout:
    """Forget the failed sign-ins of the pair ``attempt_id`` belongs to; audited with the reason."""
    if not can(staff, PERMISSION):
        raise NotPermitted(_("You are not allowed to lift sign-in lock-outs."))
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired(_("Say why: it goes on the audit trail."))
    pair = AccessAttempt.objects.filter(pk=attempt_id).values("username", "ip_address").first()
    if pair is None:
        raise LockoutNotFound(_("That lock-out has already ended or been lifted."))
    # Lock the pair's rows: of two supervisors lifting it at once, the second finds it gone.
    list(AccessAttempt.objects.select_for_update().filter(**pair))
    lockout = next(iter(_lockouts(**pair)), None)
    if lockout is None:
        raise LockoutNotFound(_("That lock-out has already ended or been lifted."))
    if pair["ip_address"]:
        reset_axes_attempts(ip=pair["ip_address"], username=pair["username"])
    else:
        # axes' reset reads a missing address as "every address"; lift this pair only.
        AccessAttempt.objects.filter(**pair).delete()
    record_system_event(
        kind="sign_in_lockout.lifted",
        actor=staff,
        ip=ip,
        data={
            "account": lockout.account,
            "user_id": lockout.user_id,
            "address": lockout.ip_address,
            "failures": lockout.failures,
            "reason": reason,
        },
    )
    return lockout
