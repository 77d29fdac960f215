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
    lookup = account_lookup(typed)
    user = _account(request, typed)
    return user.get_username() if user else lookup.get("phone_number") or typed


def _account(request: HttpRequest | None, typed: str) -> User | None:
    """The account ``typed`` names, read once per request and spelling: django-axes asks for
    the identity several times per attempt, and the backend then checks the password."""
    accounts = getattr(request, "_sign_in_accounts", None)
    if accounts is None:
        accounts = {}
        if request is not None:
            request._sign_in_accounts = accounts
    if typed not in accounts:
        user = accounts[typed] = User._default_manager.filter(**account_lookup(typed)).first()
        # django-axes asks again by the username once the account is known.
        if user is not None and "username" in account_lookup(user.get_username()):
            accounts.setdefault(user.get_username(), user)
    return accounts[typed]


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
        user = _account(request, username)
        if user is None:
            User().set_password(password)
        if user is not None and user.check_password(password) and self.user_can_authenticate(user):
            return user
        if request is not None:
            # A password was checked and refused: accounts.limits counts it against the account.
            request.sign_in_wrong_password = True
        return None
