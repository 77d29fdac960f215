"""Signing the app in and out: password plus the web's protections, then rotating tokens.

The access token is a short-lived JWT carrying the AppSession's id (``sid``); the refresh token
carries it too, and only the newest refresh token of a session works (``refresh_jti``). A
refresh token used twice means it was copied: the session is revoked, so the thief's copy and
the owner's both stop, and the owner signs in again.
"""

from dataclasses import dataclass

from django.contrib.auth import authenticate, user_logged_in
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.backends import sign_in_identity
from accounts.limits import sign_in_limits
from accounts.models import User
from accounts.services import pass_sign_in_checkpoint
from audit.services import record_system_event
from portal.errors import DomainError

from ..authentication import SESSION_CLAIM
from ..models import AppSession
from .clients import app_facts, first_sign_in


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    http_status = 401


class LockedOut(DomainError):
    code = "locked_out"
    http_status = 429


class StaffAccount(DomainError):
    code = "staff_account"
    http_status = 403


class SignInBlocked(DomainError):
    code = "sign_in_blocked"
    http_status = 403


class RefreshRefused(DomainError):
    code = "refresh_not_valid"
    http_status = 401


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    expires_in: int
    session: AppSession


def _issue(session: AppSession) -> Tokens:
    refresh = RefreshToken.for_user(session.user)
    refresh[SESSION_CLAIM] = session.pk
    access = refresh.access_token
    session.refresh_jti = str(refresh["jti"])
    session.last_used_at = timezone.now()
    session.save(update_fields=["refresh_jti", "last_used_at"])
    return Tokens(
        access=str(access),
        refresh=str(refresh),
        expires_in=int(access.lifetime.total_seconds()),
        session=session,
    )


def known_installation(account: str | None, installation: str) -> bool:
    """Whether ``installation`` signed in to ``account`` before (the ceiling lets it through)."""
    if account is None:
        return False
    return AppSession.objects.filter(user__username=account, installation_id=installation).exists()


def sign_in(
    request: HttpRequest,
    *,
    username: str,
    password: str,
    installation: str,
    platform: str,
    device_name: str = "",
    app_version: str = "",
) -> Tokens:
    """Check the password as the web's sign-in does (per-address limit, the account's
    ceiling, django-axes' lock-out, the checkpoint's block list) and open an AppSession.

    Raises ``accounts.limits.SignInLimited`` past a limit, or a ``DomainError``.
    """
    account = sign_in_identity(request, {"username": username})
    with sign_in_limits(request, account, known=known_installation(account, installation)):
        user = authenticate(request, username=username, password=password)
        if getattr(request, "axes_locked_out", False):
            # Answered here in the API's envelope, not by django-axes' middleware with its page.
            request.axes_locked_out = False
            raise LockedOut(
                _("Too many wrong passwords for this account. Wait a while, or reset it by SMS.")
            )
        if user is None:
            raise InvalidCredentials(
                _(
                    "That phone number or username and password do not match an account. "
                    "Check them and try again."
                )
            )
    if user.is_staff:
        raise StaffAccount(_("Staff accounts cannot sign in to the app; use a staff token."))
    facts = app_facts(request, installation, known_since=first_sign_in(user.pk, installation))
    if not pass_sign_in_checkpoint(user=user, facts=facts):
        raise SignInBlocked(
            _("We cannot sign you in online at the moment. Please call our service line.")
        )
    with transaction.atomic():
        now = timezone.now()
        AppSession.objects.filter(
            user=user, installation_id=installation, revoked_at__isnull=True
        ).update(revoked_at=now, revoked_reason="signed_in_again")
        session = AppSession.objects.create(
            user=user,
            installation_id=installation,
            platform=platform,
            device_name=device_name,
            app_version=app_version,
            refresh_jti="",
        )
        tokens = _issue(session)
    # django-axes forgets the failures of this address and account, as after a web sign-in.
    user_logged_in.send(sender=User, request=request, user=user)
    request.known_browser_token_to_set = None  # an app keeps no cookies
    return tokens


def refresh(raw: str) -> Tokens:
    """Rotate a refresh token: a new pair for the newest token of a live session."""
    try:
        token = RefreshToken(raw)
    except TokenError:
        raise RefreshRefused(_("The refresh token is not valid or has expired.")) from None
    with transaction.atomic():
        session = (
            AppSession.objects.select_for_update()
            .select_related("user")
            .filter(pk=token.get(SESSION_CLAIM))
            .first()
            if isinstance(token.get(SESSION_CLAIM), int)
            else None
        )
        if session is None or session.revoked_at is not None or not session.user.is_active:
            raise RefreshRefused(_("This app session has ended; sign in again."))
        if session.refresh_jti == str(token.get("jti")):
            return _issue(session)
        # An older token came back: someone else holds a copy. End the session for both.
        session.revoked_at = timezone.now()
        session.revoked_reason = "refresh_reused"
        session.save(update_fields=["revoked_at", "revoked_reason"])
        record_system_event(
            kind="api.refresh_reused",
            actor=session.user,
            data={"session": session.pk, "platform": session.platform},
        )
    raise RefreshRefused(_("This app session has ended; sign in again."))


def live_sessions(user: User):
    return AppSession.objects.filter(user=user, revoked_at__isnull=True).order_by("-last_used_at")


@transaction.atomic
def revoke(user: User, session_id: int, *, reason: str = "revoked_by_customer") -> bool:
    """End one of the customer's own sessions; False if there is no such live session."""
    return bool(
        AppSession.objects.filter(pk=session_id, user=user, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason=reason
        )
    )
