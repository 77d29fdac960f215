"""Who may do what in the back office: changes made in the user admin, on the audit trail."""

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from audit.services import record_system_event

from .models import User


@dataclass(frozen=True)
class RoleSnapshot:
    """What decides a person's powers: the flags, the groups (roles) and the direct permissions."""

    is_staff: bool = False
    is_superuser: bool = False
    is_active: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)
    user_permissions: frozenset[str] = field(default_factory=frozenset)


NO_ROLE = RoleSnapshot()


def role_snapshot(user_id: int | None) -> RoleSnapshot:
    """Read a user's role as the database holds it now (``NO_ROLE`` for a user not saved yet)."""
    user = User.objects.filter(pk=user_id).first() if user_id is not None else None
    if user is None:
        return NO_ROLE
    return RoleSnapshot(
        is_staff=user.is_staff,
        is_superuser=user.is_superuser,
        is_active=user.is_active,
        groups=frozenset(user.groups.values_list("name", flat=True)),
        user_permissions=frozenset(
            f"{app}.{codename}"
            for app, codename in user.user_permissions.values_list(
                "content_type__app_label", "codename"
            )
        ),
    )


def _differences(before: RoleSnapshot, after: RoleSnapshot) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for flag in ("is_staff", "is_superuser", "is_active"):
        if getattr(before, flag) != getattr(after, flag):
            changes[flag] = {"from": getattr(before, flag), "to": getattr(after, flag)}
    for many in ("groups", "user_permissions"):
        added = sorted(getattr(after, many) - getattr(before, many))
        removed = sorted(getattr(before, many) - getattr(after, many))
        if added or removed:
            changes[many] = {"added": added, "removed": removed}
    return changes


@transaction.atomic
def record_role_change(
    *,
    user: User,
    before: RoleSnapshot,
    changed_by: User | None,
    ip: str | None = None,
) -> bool:
    """Put a change of ``user``'s role on the system audit trail; say whether there was one.

    Call it after the change is saved (flags and memberships), in the same transaction, with the
    snapshot taken before it.
    """
    after = role_snapshot(user.pk)
    changes = _differences(before, after)
    if not changes:
        return False
    record_system_event(
        kind="staff.role_changed",
        actor=changed_by,
        ip=ip,
        data={
            "user_id": user.pk,
            "username": user.get_username(),
            "created": before is NO_ROLE,
            "changes": changes,
        },
    )
    return True


@transaction.atomic
def record_password_set(*, user: User, changed_by: User | None, ip: str | None = None) -> None:
    """Put a password set for ``user`` by someone else (a superuser in the back office) on the
    system audit trail: for staff, this is how a forgotten password is reset."""
    record_system_event(
        kind="account.password_set",
        actor=changed_by,
        ip=ip,
        data={"user_id": user.pk, "username": user.get_username(), "is_staff": user.is_staff},
    )
