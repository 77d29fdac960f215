"""Rate limits on signing in and on asking for password-reset codes, answered with the 429 page.

django-axes locks one (address, account) pair after a few wrong passwords. On top of it:

- every sign-in POST counts against its address (an IPv6 client by its /64), on the customer
  and back-office pages together, so one address cannot spray passwords over many accounts;
- wrong passwords for one account count from every address together; past the ceiling, that
  account's sign-ins are refused for the rest of a short window, except from a browser that has
  signed in to the account before or reset its password by SMS code (it holds a secret token
  cookie), so a botnet's guesses are capped and the real user is not locked out (the trade-off
  is explained at ``ACCOUNTS_SIGN_IN_FAILURES_PER_ACCOUNT``);
- password-reset requests count per address and per phone number, with or without an account;
  past the number's limit the codes already sent to it still work.
"""

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from accounts.backends import parse_phone_number, sign_in_identity
from accounts.models import User
from portal.ratelimits import client_address_key, seconds_to_wait, too_many_requests

SIGN_IN_GROUP = "accounts.sign_in"
RESET_REQUEST_GROUP = "accounts.password_reset"

ACCOUNT_CEILING_REASON = _(
    "There were many wrong passwords for this account in a short time, so for its safety it "
    "can only be signed in to from a phone or computer that has signed in to it before. A "
    "customer who resets the password with a code sent by SMS can sign in from this one at once."
)
NUMBER_LIMIT_MESSAGE = ngettext_lazy(
    "A password reset was asked for this phone number many times in a short time, so no new "
    "code was sent. The newest code already sent to it still works until it expires: enter it "
    "below. You can ask for a new code in %(minutes)s minute.",
    "A password reset was asked for this phone number many times in a short time, so no new "
    "code was sent. The newest code already sent to it still works until it expires: enter it "
    "below. You can ask for a new code in %(minutes)s minutes.",
    "minutes",
)


def _typed_account(request: HttpRequest) -> str | None:
    """The account a sign-in POST names, normalised as django-axes counts it; None if malformed.

    Malformed text (empty, longer than any username, a NUL character) is left to the form,
    which refuses it without checking a password.
    """
    typed = request.POST.get("username", "")
    if not typed or len(typed) > User._meta.get_field("username").max_length or "\x00" in typed:
        return None
    return sign_in_identity(request)


def _fixed_key(value: str) -> Callable[[str, HttpRequest], str]:
    """A django-ratelimit key function that always answers ``value``."""
    return lambda group, request: value


# The "known browser" token: a random secret the server hands out at a successful sign-in or
# password reset, unrelated to the device_id cookie (which the timeline and exports show and the
# client may choose). Only a keyed digest of (account, token) is kept, in the cache. "token" in
# the name keeps it out of Django's error reports, which redact such cookies.
KNOWN_BROWSER_COOKIE = "known_browser_token"
# In production the __Host- prefix makes browsers accept the cookie only from this very host over
# HTTPS, so a sibling subdomain cannot plant a token it knows before the person signs in.
KNOWN_BROWSER_SECURE_COOKIE = "__Host-known_browser_token"
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def _known_browser_cookie_name() -> str:
    return KNOWN_BROWSER_SECURE_COOKIE if settings.SESSION_COOKIE_SECURE else KNOWN_BROWSER_COOKIE


def _browser_token(request: HttpRequest) -> str | None:
    token = request.COOKIES.get(_known_browser_cookie_name(), "")
    return token if _TOKEN_SHAPE.fullmatch(token) else None


def _password_generation(account: str) -> str:
    """When ``account``'s password last changed ("" if never, or no such account): a token
    remembered before a change is not known after it."""
    changed = (
        User.objects.filter(username=account).values_list("password_changed_at", flat=True).first()
    )
    return _generation(changed)


def _generation(changed: datetime | None) -> str:
    return changed.isoformat() if changed else ""


def _known_browser_key(account: str, token: str, generation: str | None = None) -> str:
    if generation is None:
        generation = _password_generation(account)
    digest = salted_hmac(
        "accounts.limits.known_browser", f"{account}\x00{generation}\x00{token}"
    ).hexdigest()
    return f"accounts.sign_in.known_browser:{digest}"


def _known_browser_lifetime() -> int:
    return int(timedelta(days=settings.ACCOUNTS_SIGN_IN_KNOWN_DEVICE_DAYS).total_seconds())


def remember_browser(request: HttpRequest, user: User) -> None:
    """Let this browser past ``user``'s ceiling from now on; the response sets its token.

    For a browser that proved it is the account's owner: a right password, or a password reset
    by a code texted to the account's phone.
    """
    request.known_browser_token_to_set = remember_device(user)


def remember_device(user: User) -> str:
    """A new secret token that lets its holder past ``user``'s ceiling from now on (a browser
    keeps it as a cookie, the app as its device token); ``user`` as just read or saved."""
    # Always a new token: one sent in may have been planted, or shared with another account.
    token = secrets.token_urlsafe(32)
    key = _known_browser_key(user.get_username(), token, _generation(user.password_changed_at))
    cache.set(key, True, timeout=_known_browser_lifetime())
    return token


def is_known_device(account: str, token: str | None) -> bool:
    """Whether ``token`` is one ``remember_device`` gave for ``account`` and still valid."""
    return (
        token is not None
        and _TOKEN_SHAPE.fullmatch(token) is not None
        and bool(cache.get(_known_browser_key(account, token)))
    )


@receiver(user_logged_in)
def _remember_the_browser(sender, request: HttpRequest | None, user: User, **kwargs) -> None:
    if request is not None:
        remember_browser(request, user)


def _is_known_browser(request: HttpRequest, account: str) -> bool:
    return is_known_device(account, _browser_token(request))


class KnownBrowserMiddleware:
    """Set the known-browser token cookie on the response of a request that earned one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        token = getattr(request, "known_browser_token_to_set", None)
        if token is not None:
            response.set_cookie(
                _known_browser_cookie_name(),
                token,
                max_age=_known_browser_lifetime(),
                httponly=True,
                secure=settings.SESSION_COOKIE_SECURE,
                samesite="Lax",
            )
        return response


_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_rate(rate: str) -> tuple[int, int]:
    """``"20/15m"`` -> ``(20, 900)``: how many per how many seconds (checked by the settings)."""
    count, period = rate.split("/")
    return int(count), int(period[:-1] or 1) * _SECONDS_PER_UNIT[period[-1]]


@dataclass(frozen=True)
class _FailureWindow:
    """This window's wrong passwords for one account, from every address together."""

    key: str
    limit: int
    timeout: int
    seconds_left: int

    @classmethod
    def current(cls, account: str) -> "_FailureWindow":
        limit, period = _parse_rate(settings.ACCOUNTS_SIGN_IN_FAILURES_PER_ACCOUNT)
        now = int(timezone.now().timestamp())
        start = now - now % period
        digest = hashlib.sha256(account.encode()).hexdigest()
        return cls(
            key=f"accounts.sign_in.failures:{digest}:{start}",
            limit=limit,
            timeout=period + 5,
            seconds_left=start + period - now,
        )

    def reserve(self) -> bool:
        """Take one of the window's guesses before the password is checked; False if none is left.

        Taken before and handed back after (``release``), not counted after: checked first and
        counted later, a burst of parallel guesses would all pass the check before any counted.
        """
        cache.add(self.key, 0, self.timeout)
        if self._add(1) <= self.limit:
            return True
        self._add(-1)
        return False

    def release(self) -> None:
        """Hand back a reserved guess: the attempt checked no wrong password."""
        self._add(-1)

    def count_one(self) -> None:
        """Count a wrong password that was checked without a reservation (a known browser)."""
        cache.add(self.key, 0, self.timeout)
        self._add(1)

    def _add(self, delta: int) -> int:
        try:
            return cache.incr(self.key, delta)
        except ValueError:  # the key expired in between: its window is over
            return 0


class SignInLimited(Exception):
    """A sign-in refused before any password check: how long to wait, and why (if not plain)."""

    def __init__(self, seconds: int, reason: str = "") -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.reason = reason


@contextmanager
def sign_in_limits(request: HttpRequest, account: str | None, *, known: bool) -> Iterator[None]:
    """Count one sign-in attempt for ``account`` (None: malformed) against the address limit
    and the account's ceiling, or raise ``SignInLimited``; ``known`` is a browser or app
    installation that signed in to the account before, which the ceiling lets through."""
    wait = seconds_to_wait(
        request,
        group=SIGN_IN_GROUP,
        limits=[(client_address_key, settings.ACCOUNTS_SIGN_IN_RATE_PER_IP)],
    )
    if wait:
        raise SignInLimited(wait)
    window = _FailureWindow.current(account) if account is not None else None
    if window is not None and not known and not window.reserve():
        raise SignInLimited(window.seconds_left, str(ACCOUNT_CEILING_REASON))
    try:
        yield
    finally:
        # accounts.backends marks a password it checked and refused; an attempt django-axes
        # refused before any check, or a right password, is not a guess against the ceiling.
        wrong_password = getattr(request, "sign_in_wrong_password", False)
        if window is not None and not known and not wrong_password:
            window.release()
        elif window is not None and known and wrong_password:
            window.count_one()


def limit_sign_in_posts(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer sign-in POSTs past the address limit or the account's ceiling with the 429 page."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        account = _typed_account(request)
        known = account is not None and _is_known_browser(request, account)
        try:
            with sign_in_limits(request, account, known=known):
                return view(request, *args, **kwargs)
        except SignInLimited as limited:
            return too_many_requests(
                request, limited.seconds, reason=limited.reason, back_url=request.get_full_path()
            )

    return wrapped


@dataclass(frozen=True)
class ResetRefusal:
    """A password-reset request past a limit: how long to wait, and the number, if it was its."""

    seconds: int
    # Set when the number's own limit refused: codes already sent to it still work, so the
    # person is led to the page where one is entered instead of being shut out.
    phone_number: str | None = None


def refuse_password_reset(request: HttpRequest) -> ResetRefusal | None:
    """Count a password-reset request; say why it is refused if it is past a limit, else None."""
    wait = seconds_to_wait(
        request,
        group=RESET_REQUEST_GROUP,
        limits=[(client_address_key, settings.ACCOUNTS_PASSWORD_RESET_RATE_PER_IP)],
    )
    if wait:
        return ResetRefusal(seconds=wait)
    # Counted for every valid number, with or without an account, so a refusal tells nothing.
    number = parse_phone_number(request.POST.get("phone_number", "")[:64])
    if number is None:
        return None  # the form says what is wrong with it; no code goes anywhere
    wait = seconds_to_wait(
        request,
        group=RESET_REQUEST_GROUP,
        limits=[(_fixed_key(f"number:{number}"), settings.ACCOUNTS_PASSWORD_RESET_RATE_PER_NUMBER)],
    )
    if wait:
        return ResetRefusal(seconds=wait, phone_number=number)
    return None
