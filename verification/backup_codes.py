"""Staff backup codes: one-time codes for the back office when the authenticator app is away.

They are django-otp's static device: each code is a ``StaticToken``, deleted when it is used.
Staff get them with their account (``accounts.services.create_staff_user``) and replace them in
the back office with a code from their app: a password alone never changes a factor. The codes
are shown once, when made; they never go into an event, a log or any other page (django-otp
keeps them as typed in ``StaticToken``, which the back office's device admin never shows).
Every use and every replacement goes on the system audit trail, with how many codes are left,
so a supervisor sees who is running out. Customers never have them: their pages check codes by
channel (``verification.services.check_code``), and no channel reads a static device.
"""

import re
import unicodedata
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Q
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.services import record_system_event

from .normalize import normalize_code

BACKUP_CODE_COUNT = 10
# At or below this many codes left, the supervisors' list marks the member as running out.
FEW_BACKUP_CODES_LEFT = 3
DEVICE_NAME = "Backup codes"

# django-otp's StaticToken.random_token: 8 characters of lower-case base32 (40 random bits).
_BACKUP_CODE = re.compile(r"[a-z2-7]{8}")
_SEPARATORS = re.compile(r"[\s\-_.]+")


class NotStaff(ValueError):
    """Backup codes are for staff members only."""


def normalize_backup_code(raw: str) -> str:
    """The code in what was typed (any case, spaces or dashes, full-width letters), or ``""``."""
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw or "")).lower()
    return text if _BACKUP_CODE.fullmatch(text) else ""


def looks_like_backup_code(raw: str) -> bool:
    """Whether ``raw`` is shaped like a backup code rather than an app's six digits.

    The two never overlap (a backup code has letters, or eight characters), so the sign-in
    tries only the device the code can belong to and a typo counts against that one alone.
    """
    return bool(normalize_backup_code(raw))


def display_code(code: str) -> str:
    """``abcd2345`` as ``abcd-2345``: easier to copy down; the dash is optional when typed."""
    return f"{code[:4]}-{code[4:]}"


def _require_staff(user: User) -> None:
    if not (user.is_active and user.is_staff):
        raise NotStaff("backup codes are for active staff members only")


def _replace_codes(user: User) -> list[str]:
    """Give ``user`` a fresh set of codes, dropping the old set; return them for display."""
    # A new device, not new codes on the old one: a session that signed in with an old code is
    # bound to the old device's id, and with it gone that session is no longer verified.
    list(StaticDevice.objects.select_for_update().filter(user=user))
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=True)
    codes: set[str] = set()
    while len(codes) < BACKUP_CODE_COUNT:
        codes.add(StaticToken.random_token())
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return [display_code(code) for code in sorted(codes)]


@transaction.atomic
def issue_initial_backup_codes(*, user: User) -> list[str]:
    """The first set for a new staff member; the caller's transaction records the creation."""
    _require_staff(user)
    return _replace_codes(user)


@transaction.atomic
def regenerate_backup_codes(
    *, staff: User, current_code: str, ip: str | None = None
) -> list[str] | None:
    """Replace the member's codes, given a code from their authenticator app now.

    Returns the new codes, to be shown once, or None if the app code is wrong (the wrong guess
    is counted on the app, so this is no way around its throttle; nothing raises, so the count
    is kept).
    """
    _require_staff(staff)
    device = TOTPDevice.objects.select_for_update().filter(user=staff, confirmed=True).first()
    if device is None or not device.verify_token(normalize_code(current_code)):
        return None
    codes = _replace_codes(staff)
    record_system_event(
        kind="staff.backup_codes_regenerated",
        actor=staff,
        data={"user_id": staff.pk, "username": staff.get_username(), "codes_left": len(codes)},
        ip=ip,
    )
    return codes


def locked_backup_device(user: User) -> StaticDevice | None:
    """The member's confirmed backup-code device, locked for the caller's transaction.

    Two sign-ins with one code at once: the second waits here for the first to commit, then
    finds the code gone. Without the lock both would read the code and both delete it.
    """
    return StaticDevice.objects.select_for_update().filter(user=user, confirmed=True).first()


def record_backup_code_use(*, device: StaticDevice, ip: str | None = None) -> None:
    """Put a backup code's use on the audit trail (never the code), with how many are left."""
    user = device.user
    record_system_event(
        kind="staff.backup_code_used",
        actor=user,
        data={
            "user_id": user.pk,
            "username": user.get_username(),
            "codes_left": device.token_set.count(),
        },
        ip=ip,
    )


@dataclass(frozen=True)
class BackupCodesLeft:
    username: str
    codes_left: int
    running_out: bool


def staff_backup_codes_left() -> list[BackupCodesLeft]:
    """Every active staff member and their backup codes left, fewest first (supervisors' list).

    A member with none at all is listed too, with 0: they are the first to need new ones.
    """
    rows = (
        User.objects.filter(is_active=True, is_staff=True)
        .annotate(
            left=Count(
                "staticdevice__token_set", filter=Q(staticdevice__confirmed=True), distinct=True
            )
        )
        .values_list("username", "left")
        .order_by("left", "username")
    )
    return [
        BackupCodesLeft(
            username=username, codes_left=left, running_out=left <= FEW_BACKUP_CODES_LEFT
        )
        for username, left in rows
    ]


def backup_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()
