"""Staff roles: Django groups with explicit permissions. The data migration applies this table."""

from collections.abc import Callable
from typing import Any

VIEW_ALL = [
    "activation.view_activationcase",
    "activation.view_caseevent",
    "activation.view_corerequest",
    "activation.view_creditline",
    "activation.view_overriderequest",
    "audit.view_systemevent",
    "risk.view_risk",
]
RISK_RULES = ["risk.edit_rules", "risk.publish_rules", "risk.manage_risk_lists"]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    "agent": [
        *VIEW_ALL,
        "activation.work_case",
        "activation.request_override",
        "risk.record_risk_outcome",
    ],
    "supervisor": [
        *VIEW_ALL,
        "activation.work_case",
        "activation.request_override",
        "activation.approve_override",
        "activation.bulk_recover",
        "activation.operate_core_switch",
        "activation.export_case_history",
        "audit.lift_sign_in_lockout",
        "risk.record_risk_outcome",
        *RISK_RULES,
    ],
    # The risk team tunes the checkpoint: rule sets, lists and outcomes; it works no cases.
    "risk_analyst": [*VIEW_ALL, "risk.record_risk_outcome", *RISK_RULES],
    # Auditors see everything and change nothing; exporting changes nothing either.
    "auditor": [*VIEW_ALL, "activation.export_case_history"],
}
ROLES = tuple(ROLE_PERMISSIONS)
# The apps whose permissions roles hand out; codenames are unique across them.
ROLE_APPS = ("activation", "audit", "risk")


def sync_roles(group_model, permission_model, role_permissions=None) -> None:
    """Make each role's group hold exactly its permissions (models may be historical)."""
    for role, names in (role_permissions or ROLE_PERMISSIONS).items():
        group, _created = group_model.objects.get_or_create(name=role)
        permissions = []
        for name in names:
            app_label, codename = name.split(".")
            permissions.append(
                permission_model.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(permissions)


def role_permissions(user) -> frozenset[str]:
    """The role permissions ``user`` holds through roles or grants, superuser or not.

    Superusers administer staff accounts; working cases takes a role like anyone else's, so
    Django's "a superuser may do anything" does not apply here.
    """
    cached = getattr(user, "_activation_role_permissions", None)
    if cached is not None:
        return cached
    if not (user.is_authenticated and user.is_active and user.is_staff):
        permissions = frozenset()
    else:
        from django.contrib.auth.models import Permission
        from django.db.models import Q

        permissions = frozenset(
            Permission.objects.filter(
                Q(group__user=user) | Q(user=user), content_type__app_label__in=ROLE_APPS
            ).values_list("codename", flat=True)
        )
    user._activation_role_permissions = permissions
    return permissions


def can(user, codename: str) -> bool:
    return codename in role_permissions(user)


def holders_of(codename: str) -> Callable[[Any], bool]:
    """A test for "may ``user`` do ``codename``", e.g. for which menu entries to show."""
    return lambda user: can(user, codename)
