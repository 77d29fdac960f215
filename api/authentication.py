"""Who is calling the API: the customer's app (a short-lived JWT bound to a live AppSession)
or a staff tool (a named, scoped, expiring staff token). Both come as ``Authorization: Bearer``.

A bearer token is only ever one of the two: staff tokens start with ``ars_`` and are refused
as JWTs, and a JWT is never looked up as a staff token. A customer's token does not open staff
endpoints (they require a staff token), nor a staff token the customer endpoints.
"""

import hashlib
import hmac
from datetime import timedelta

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import AccessToken

from activation import selectors

from .models import AppSession, StaffToken

STAFF_TOKEN_PREFIX = "ars_"  # noqa: S105 - a marker, not a secret
# last_used_at is written at most this often per token or session, not on every request.
TOUCH_EVERY = timedelta(minutes=1)
SESSION_CLAIM = "sid"


def opened_before_password_change(opened_at, user) -> bool:
    """A session or token from before the user's last password change no longer counts."""
    changed = user.password_changed_at
    return changed is not None and opened_at < changed


def bearer_token(request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    parts = get_authorization_header(request).split()
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return None
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise exceptions.AuthenticationFailed(_("The token is not valid.")) from None


class AppAccessTokenAuthentication(JWTAuthentication):
    """The app's access token: a JWT signed by us, not expired, whose AppSession is live.

    On a view of one case (``case_id`` in its URL) that sets ``case_read_with_session``, the
    case is read with the session and left on ``request.app_case``.
    """

    www_authenticate_realm = "api"

    def authenticate(self, request):
        access = self.access_token(request)
        if access is None:
            return None
        session_id = access.get(SESSION_CLAIM)
        if type(session_id) is not int:  # not a bool either: True is an int to isinstance
            return self.accept(request, access, None)
        if getattr(request.parser_context.get("view"), "case_read_with_session", False):
            # One round trip instead of two: the session is read in the statement that reads
            # the case, and checked below exactly as when it is read alone.
            case_id = request.parser_context["kwargs"]["case_id"]
            case = selectors.case_for_app_session(case_id, session_id=session_id)
            if case is not None:
                authenticated = self.accept(request, access, case.app_session)
                request.app_case = case
                return authenticated
            # A dead session or another customer's case: the session read alone tells which
            # (a 401 here, or the view's 404).
        session = (
            AppSession.objects.select_related("user")
            .filter(pk=session_id, revoked_at__isnull=True)
            .first()
        )
        return self.accept(request, access, session)

    def access_token(self, request) -> AccessToken | None:
        """The request's app access token, its signature and expiry checked (no query); None
        if the request carries no bearer token or a staff token."""
        token = bearer_token(request)
        if token is None or token.startswith(STAFF_TOKEN_PREFIX):
            return None
        try:
            return AccessToken(token)
        except TokenError:
            raise exceptions.AuthenticationFailed(
                _("The access token is not valid or has expired; refresh it."),
                code="token_not_valid",
            ) from None

    def accept(self, request, access: AccessToken, session: AppSession | None):
        """``(user, access)`` if ``session`` (unrevoked, with its user) still stands for the
        token; otherwise refuse."""
        user = session.user if session else None
        if (
            user is None
            or str(user.pk) != str(access.get("user_id"))
            or not user.is_active
            or user.is_staff
            or opened_before_password_change(session.created_at, user)
        ):
            raise exceptions.AuthenticationFailed(
                _("This app session has ended; sign in again."), code="session_ended"
            )
        now = timezone.now()
        if now - session.last_used_at > TOUCH_EVERY:
            AppSession.objects.filter(pk=session.pk).update(last_used_at=now)
        request.app_session = session
        return user, access

    def authenticate_header(self, request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'

    def get_validated_token(self, raw_token):  # pragma: no cover - authenticate() is used
        raise InvalidToken()


def staff_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class StaffTokenAuthentication(BaseAuthentication):
    """A staff tool's token: ``ars_<prefix>_<secret>``, live, unexpired, of an active staff
    member. ``request.auth`` is the StaffToken, whose ``scopes`` the permissions read."""

    def authenticate(self, request):
        token = bearer_token(request)
        if token is None or not token.startswith(STAFF_TOKEN_PREFIX):
            return None
        _marker, _sep, rest = token.partition(STAFF_TOKEN_PREFIX)
        prefix, _sep, _secret = rest.partition("_")
        row = (
            StaffToken.objects.select_related("user").filter(prefix=prefix).first()
            if prefix and len(token) < 200
            else None
        )
        now = timezone.now()
        if row is None or not hmac.compare_digest(row.key_hash, staff_token_hash(token)):
            raise exceptions.AuthenticationFailed(_("The token is not valid."))
        if (
            row.revoked_at is not None
            or row.expires_at <= now
            or opened_before_password_change(row.created_at, row.user)
        ):
            raise exceptions.AuthenticationFailed(
                _("This token has expired or was revoked."), code="token_expired"
            )
        user = row.user
        if not (user.is_active and user.is_staff):
            raise exceptions.AuthenticationFailed(_("The token is not valid."))
        if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
            StaffToken.objects.filter(pk=row.pk).update(last_used_at=now)
        return user, row

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
