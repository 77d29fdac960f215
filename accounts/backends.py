"""Sign in with a phone number or a username."""

import unicodedata

import phonenumbers
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from accounts.models import User


def parse_phone_number(value: str) -> str | None:
    """Return ``value`` as E.164 if it is a valid phone number (China by default), else None."""
    try:
        number = phonenumbers.parse(value, "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def account_lookup(typed: str) -> dict[str, str]:
    """The query that finds the account ``typed`` names: by phone number if it is one."""
    phone = parse_phone_number(typed)
    return {"phone_number": phone} if phone else {"username": typed}


def sign_in_identity(request: HttpRequest | None, credentials: dict | None = None) -> str | None:
    """Name the account a sign-in attempt is for, however it was typed (django-axes' username).

    Lock-outs count per account, not per spelling: every spelling of a phone number and the
    username of its account give the account's username. Text that names no account gives its
    E.164 form if it is a phone number, else itself; case is kept, as the username lookup is
    case-sensitive.
    """
    typed = (credentials or {}).get("username")
    if typed is None and request is not None:
        typed = request.POST.get("username")
    if typed is None:
        return None
    # As the sign-in form's UsernameField does before the backend sees the text.
    typed = unicodedata.normalize("NFKC", typed).strip()
    # django-axes asks several times per attempt; one lookup per request and spelling is enough.
    cache = getattr(request, "_sign_in_identities", None)
    if cache is None:
        cache = {}
        if request is not None:
            request._sign_in_identities = cache
    if typed not in cache:
        lookup = account_lookup(typed)
        username = User._default_manager.filter(**lookup).values_list("username", flat=True)
        cache[typed] = username.first() or lookup.get("phone_number") or typed
    return cache[typed]


class PhoneOrUsernameBackend(ModelBackend):
    """Like Django's backend, but a valid phone number finds the account it belongs to.

    Unknown accounts still cost one password hash, as in Django's own backend, so that timing
    does not tell which phone numbers or usernames exist.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs,
    ) -> User | None:
        if username is None or password is None:
            return None
        try:
            user = User._default_manager.get(**account_lookup(username))
        except User.DoesNotExist:
            User().set_password(password)
            user = None
        if user is not None and user.check_password(password) and self.user_can_authenticate(user):
            return user
        if request is not None:
            # A password was checked and refused: accounts.limits counts it against the account.
            request.sign_in_wrong_password = True
        return None
