"""Signing the app in and out: password plus the web's protections, then rotating tokens.

The access token is a short-lived JWT carrying the AppSession's id (``sid``); the refresh token
carries it too, and only the newest refresh token of a session works (``refresh_jti``). A
refresh token used twice means it was copied: the session is revoked, so the thief's copy and
the owner's both stop, and the owner signs in again.
"""

import hashlib
import logging
from dataclasses import dataclass, replace

from django.conf import settings
from django.contrib.auth import authenticate, user_logged_in, user_login_failed
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.backends import sign_in_identity
from accounts.limits import is_known_device, sign_in_limits
from accounts.models import User
from accounts.services import pass_sign_in_checkpoint
from audit.services import record_system_event
from portal.errors import DomainError, RateLimited

from ..authentication import SESSION_CLAIM, opened_before_password_change
from ..models import AppSession
from .clients import app_facts, first_sign_in

logger = logging.getLogger(__name__)


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    http_status = 401


class LockedOut(RateLimited):
    code = "locked_out"


def WRONG_CREDENTIALS() -> str:
    return _(
        "That phone number or username and password do not match an account. "
        "Check them and try again."
    )


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
    # Given at sign-in only: the app keeps it and sends it when it signs in again.
    device_token: str = ""


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


def sign_in(
    request: HttpRequest,
    *,
    username: str,
    password: str,
    installation: str,
    platform: str,
    device_token: str | None = None,
    device_name: str = "",
    app_version: str = "",
) -> Tokens:
    """Check the password as the web's sign-in does (per-address limit, the account's
    ceiling, django-axes' lock-out, the checkpoint's block list) and open an AppSession.

    Raises ``accounts.limits.SignInLimited`` past a limit, or a ``DomainError``.
    """
    account = sign_in_identity(request, {"username": username})
    # Only the secret device token a sign-in to this account handed out lets the app past the
    # account's ceiling; the installation id is the app's own and no secret.
    known = account is not None and is_known_device(account, device_token)
    with sign_in_limits(request, account, known=known):
        user = authenticate(request, username=username, password=password)
        if user is not None and user.is_staff:
            # A staff member's right password counts as a wrong one here, in every limit too,
            # so neither the answer nor the lock-out tells that it was right (staff sign in to
            # the back office, with their second factor).
            request.sign_in_wrong_password = True
            user_login_failed.send(sender=User, credentials={"username": username}, request=request)
            user = None
        if getattr(request, "axes_locked_out", False):
            # Answered here in the API's envelope, not by django-axes' middleware with its page.
            request.axes_locked_out = False
            raise LockedOut(
                _("Too many wrong passwords for this account. Wait a while, or reset it by SMS."),
                retry_after=int(settings.AXES_COOLOFF_TIME * 3600),
            )
        if user is None:
            raise InvalidCredentials(WRONG_CREDENTIALS())
    facts = app_facts(
        request, installation, known_since=first_sign_in(user.pk, installation) if known else None
    )
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
    # As after a web sign-in: django-axes forgets this address's and account's failures, and
    # accounts.limits remembers the device with a new token, which a browser would get as a
    # cookie and the app gets in the answer.
    user_logged_in.send(sender=User, request=request, user=user)
    device_token = request.known_browser_token_to_set
    request.known_browser_token_to_set = None  # no cookie: an app keeps none
    return replace(tokens, device_token=device_token)


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
        if (
            session is None
            or session.revoked_at is not None
            or not session.user.is_active
            or opened_before_password_change(session.created_at, session.user)
        ):
            raise RefreshRefused(_("This app session has ended; sign in again."))
        jti = str(token.get("jti"))
        if session.refresh_jti == jti:
            tokens = _issue(session)
            _remember_answer(jti, tokens)
            return tokens
        answer = _remembered_answer(jti, session)
        if answer is not None:
            # The same refresh again within the grace period (its answer was lost on the way,
            # or the app sent it twice at once): the same new pair, not a theft.
            return answer
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


# How long a refresh token's answer is kept for the same token sent again.
REFRESH_RETRY_GRACE_SECONDS = 60


def _answer_key(jti: str) -> str:
    return "api.refresh_answer:" + hashlib.sha256(jti.encode()).hexdigest()


def _remember_answer(jti: str, tokens: Tokens) -> None:
    answer = {"access": tokens.access, "refresh": tokens.refresh, "expires_in": tokens.expires_in}
    try:
        cache.set(_answer_key(jti), answer, timeout=REFRESH_RETRY_GRACE_SECONDS)
    except Exception:  # any cache client error: a retry is then taken for a copy
        logger.warning("API: could not keep a refresh answer for its retries")


def _remembered_answer(jti: str, session: AppSession) -> Tokens | None:
    try:
        answer = cache.get(_answer_key(jti))
    except Exception:  # any cache client error
        return None
    if not answer:
        return None
    return Tokens(session=session, **answer)


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
