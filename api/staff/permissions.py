"""Who may call a staff endpoint: a staff token (never the app's JWT) with the scope it needs.

Scopes say what the token was made for; the person's role rules (``accounts.roles.can``) are
checked on top, by the services for writes and by ``has_role`` for reads. Views list
``IsStaffToken`` first, so a customer's token is told it needs a staff token.
"""

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from accounts.roles import can
from api.models import StaffToken


class IsStaffToken(BasePermission):
    """The request came with a staff token (``request.auth`` is its row)."""

    message = _("This endpoint takes a staff API token.")
    code = "staff_token_required"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, StaffToken)


class _HasScope(BasePermission):
    scope = ""
    message = _("The token does not have the scope this needs.")
    code = "scope_missing"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, StaffToken) and self.scope in request.auth.scopes


class ReadScope(_HasScope):
    """``read``: the queue and a case."""

    scope = StaffToken.Scope.READ


class WorkCasesScope(_HasScope):
    """``work_cases``: the actions on a case."""

    scope = StaffToken.Scope.WORK_CASES


class ExportScope(_HasScope):
    """``export``: starting, downloading and reading exports."""

    scope = StaffToken.Scope.EXPORT


def has_role(codename: str) -> type[BasePermission]:
    """A permission class: the token's owner holds the role permission ``codename``."""

    class HasRole(BasePermission):
        message = _("Your role does not allow this.")
        code = "not_permitted"

        def has_permission(self, request, view) -> bool:
            return can(request.user, codename)

    HasRole.__name__ = f"HasRole_{codename}"
    return HasRole
