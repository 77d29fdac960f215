"""Sign in with a phone number or a username."""

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
        phone = parse_phone_number(username)
        lookup = {"phone_number": phone} if phone else {"username": username}
        try:
            user = User._default_manager.get(**lookup)
        except User.DoesNotExist:
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
