"""What the system trail says about the people in an authenticator reset (selectors).

A reset is four-eyes only if both pairs of eyes are who they seem: a password set for the member
or a role just granted to the requester shortly before the request is how one person with admin
rights (a superuser) would set up a takeover. The approver sees those changes on the approval
list, and a supervisor made so very recently may neither ask nor approve.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from audit.models import SystemEvent

from .models import AuthenticatorReset

SUPERVISOR_ROLE = "supervisor"
# How far back the approval list shows password and role changes of the people in a reset.
ACCOUNT_CHANGES_SHOWN_FOR = timedelta(days=30)
ACCOUNT_CHANGE_KINDS = {
    "staff.created": _("Staff account created"),
    "account.password_set": _("Password set"),
    "staff.role_changed": _("Role changed"),
}
ENROLMENT_KINDS = {
    "staff.authenticator_enrolment_started": _("Set-up started"),
    "staff.authenticator_enrolment_restarted": _("Set-up started again, replacing the key"),
    "staff.authenticator_enrolled": _("New app set up"),
}


@dataclass(frozen=True)
class TrailEntry:
    """One event of the system trail as the resets page shows it: what, whose, by whom, when."""

    label: str
    username: str
    by: str
    at: datetime
    ip_address: str | None
    details: str = ""


@dataclass
class ResetWithHistory:
    reset: AuthenticatorReset
    entries: list[TrailEntry] = field(default_factory=list)


def _role_details(changes: dict[str, Any]) -> str:
    parts = []
    for flag in ("is_staff", "is_superuser", "is_active"):
        if flag in changes:
            parts.append(f"{flag} → {changes[flag]['to']}")
    for many in ("groups", "user_permissions"):
        if many in changes:
            signed = [f"+{name}" for name in changes[many]["added"]]
            signed += [f"−{name}" for name in changes[many]["removed"]]
            parts.append(f"{many} {' '.join(signed)}")
    return "; ".join(parts)


def _entry(event: SystemEvent, labels: dict[str, Any]) -> TrailEntry:
    data = event.data or {}
    return TrailEntry(
        label=str(labels[event.kind]),
        username=str(data.get("username", "")),
        by=event.actor.get_username() if event.actor else "",
        at=event.created_at,
        ip_address=event.ip_address,
        details=_role_details(data.get("changes") or {})
        or (f"role {data['role']}" if event.kind == "staff.created" else ""),
    )


def account_changes(user_ids: Iterable[int], *, since: datetime) -> dict[int, list[TrailEntry]]:
    """Passwords set and roles changed for these users since ``since``, newest first, by user."""
    events = (
        SystemEvent.objects.filter(
            kind__in=ACCOUNT_CHANGE_KINDS,
            created_at__gte=since,
            data__user_id__in=list(user_ids),
        )
        .select_related("actor")
        .order_by("-seq")
    )
    by_user: dict[int, list[TrailEntry]] = defaultdict(list)
    for event in events:
        by_user[event.data["user_id"]].append(_entry(event, ACCOUNT_CHANGE_KINDS))
    return by_user


def pending_resets_with_account_changes() -> list[ResetWithHistory]:
    """Resets waiting for approval, oldest first, each with its member's and requester's recent
    password and role changes."""
    resets = list(
        AuthenticatorReset.objects.filter(status=AuthenticatorReset.Status.PENDING)
        .select_related("staff_member", "requested_by")
        .order_by("requested_at")
    )
    people = {r.staff_member_id for r in resets} | {r.requested_by_id for r in resets}
    changes = account_changes(people, since=timezone.now() - ACCOUNT_CHANGES_SHOWN_FOR)
    rows = []
    for reset in resets:
        entries = changes.get(reset.staff_member_id, []) + changes.get(reset.requested_by_id, [])
        rows.append(ResetWithHistory(reset, sorted(entries, key=lambda e: e.at, reverse=True)))
    return rows


def recent_approved_resets_with_enrolment() -> list[ResetWithHistory]:
    """Resets approved in the last 30 days, newest first, each with its enrolment events (from
    which address the set-up started and finished), so that the supervisors see who used it."""
    resets = list(
        AuthenticatorReset.objects.filter(
            status=AuthenticatorReset.Status.APPROVED,
            decided_at__gte=timezone.now() - ACCOUNT_CHANGES_SHOWN_FOR,
        )
        .select_related("staff_member", "requested_by", "decided_by")
        .order_by("-decided_at")
    )
    events = (
        SystemEvent.objects.filter(
            kind__in=ENROLMENT_KINDS, data__reset__in=[reset.pk for reset in resets]
        )
        .select_related("actor")
        .order_by("seq")
    )
    by_reset: dict[int, list[TrailEntry]] = defaultdict(list)
    for event in events:
        by_reset[event.data["reset"]].append(_entry(event, ENROLMENT_KINDS))
    return [ResetWithHistory(reset, by_reset.get(reset.pk, [])) for reset in resets]


def _grants_supervisor(event: SystemEvent) -> bool:
    data = event.data or {}
    if event.kind == "staff.created":  # create_staff_user, e.g. from the command line
        return data.get("role") == SUPERVISOR_ROLE
    changes = data.get("changes") or {}
    # A superuser can put themselves in any group, so becoming one counts as becoming supervisor.
    groups_added = (changes.get("groups") or {}).get("added") or []
    made_superuser = (changes.get("is_superuser") or {}).get("to") is True
    return SUPERVISOR_ROLE in groups_added or made_superuser


def made_supervisor_since(user_id: int, since: datetime) -> datetime | None:
    """When ``user_id`` was last given the supervisor role (or superuser) after ``since``."""
    events = SystemEvent.objects.filter(
        kind__in=["staff.role_changed", "staff.created"],
        created_at__gte=since,
        data__user_id=user_id,
    ).order_by("-seq")
    for event in events:
        if _grants_supervisor(event):
            return event.created_at
    return None


def role_age_limit() -> timedelta:
    return timedelta(hours=settings.BACKOFFICE_RESET_ROLE_AGE_HOURS)
