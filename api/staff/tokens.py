"""Staff API tokens: made, listed and revoked by their owner; only the token's hash is kept.

A token is shown once, when it is made. Its scopes may not reach past its owner's role, and
every token made or revoked goes on the system audit trail (never the secret itself).
"""

import secrets
from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.roles import can
from api.authentication import STAFF_TOKEN_PREFIX, staff_token_hash
from api.models import StaffToken
from audit.services import record_system_event
from portal.errors import DomainError, NotPermitted

DEFAULT_DAYS = 30
MAX_DAYS = 90
PREFIX_LENGTH = 10
# The role permission each scope needs: a token never does more than its owner may.
SCOPE_PERMISSIONS = {
    StaffToken.Scope.READ: "view_activationcase",
    StaffToken.Scope.WORK_CASES: "work_case",
    StaffToken.Scope.EXPORT: "export_case_history",
}


class InvalidTokenRequest(DomainError):
    code = "invalid_token_request"


class TokenNotFound(DomainError):
    code = "token_not_found"
    http_status = 404


def allowed_scopes(staff: User) -> list[str]:
    """The scopes ``staff``'s role allows a token of theirs to have."""
    return [scope for scope, permission in SCOPE_PERMISSIONS.items() if can(staff, permission)]


def _new_prefix() -> str:
    # URL-safe, without "_" (it separates the prefix from the secret) or "-" for readability.
    while True:
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        if not StaffToken.objects.filter(prefix=prefix).exists():
            return prefix


def _check_scopes(staff: User, scopes: list[str]) -> list[str]:
    chosen = sorted(set(scopes))
    unknown = [scope for scope in chosen if scope not in StaffToken.Scope.values]
    if not chosen or unknown:
        raise InvalidTokenRequest(
            _("Choose at least one scope from the list."),
            choices=list(StaffToken.Scope.values),
            unknown=unknown,
        )
    beyond = [scope for scope in chosen if scope not in allowed_scopes(staff)]
    if beyond:
        raise NotPermitted(_("Your role does not allow a token with these scopes."), scopes=beyond)
    return chosen


@transaction.atomic
def create_token(
    *,
    staff: User,
    name: str,
    scopes: list[str],
    days: int = DEFAULT_DAYS,
    ip: str | None = None,
) -> tuple[StaffToken, str]:
    """Make a token for ``staff``; return its row and the plaintext, which is never kept."""
    if not (staff.is_active and staff.is_staff):
        raise NotPermitted(_("Only staff make API tokens."))
    name = (name or "").strip()
    if not name or len(name) > StaffToken._meta.get_field("name").max_length:
        raise InvalidTokenRequest(_("Give the token a name of at most 100 characters."))
    if not (isinstance(days, int) and 1 <= days <= MAX_DAYS):
        raise InvalidTokenRequest(
            _("A token lives from 1 to %(days)d days.") % {"days": MAX_DAYS}, max_days=MAX_DAYS
        )
    chosen = _check_scopes(staff, scopes)
    prefix = _new_prefix()
    plaintext = f"{STAFF_TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    token = StaffToken.objects.create(
        user=staff,
        name=name,
        scopes=chosen,
        prefix=prefix,
        key_hash=staff_token_hash(plaintext),
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    record_system_event(
        kind="api_token.created",
        actor=staff,
        data={
            "token": token.pk,
            "prefix": prefix,
            "name": name,
            "scopes": chosen,
            "expires_at": token.expires_at.isoformat(),
        },
        ip=ip,
    )
    return token, plaintext


@transaction.atomic
def revoke_token(*, token_id: int, by: User, ip: str | None = None) -> StaffToken:
    """Revoke one of ``by``'s own tokens at once; revoking a revoked token changes nothing."""
    # The row lock: two revocations at once write one revocation and one audit event.
    token = StaffToken.objects.select_for_update().filter(pk=token_id, user=by).first()
    if token is None:
        raise TokenNotFound(_("You have no such token."))
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.revoked_by = by
    token.save(update_fields=["revoked_at", "revoked_by"])
    record_system_event(
        kind="api_token.revoked",
        actor=by,
        data={"token": token.pk, "prefix": token.prefix, "name": token.name},
        ip=ip,
    )
    return token


def tokens_for(staff: User) -> QuerySet[StaffToken]:
    """``staff``'s tokens, newest first."""
    return StaffToken.objects.filter(user=staff).order_by("-created_at", "-pk")
