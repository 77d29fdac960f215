"""The first-party device id: a long-lived, signed, HttpOnly cookie."""

import secrets
from collections.abc import Callable

from django.core import signing
from django.http import HttpRequest, HttpResponse

DEVICE_COOKIE = "device_id"
DEVICE_COOKIE_SALT = "risk.device"
DEVICE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600


def read_device_cookie(request: HttpRequest) -> tuple[str, str]:
    """``(device key, state)``: state is "valid", "new" (no cookie) or "tampered"."""
    raw = request.COOKIES.get(DEVICE_COOKIE)
    if raw is None:
        return "", "new"
    try:
        key = request.get_signed_cookie(
            DEVICE_COOKIE, salt=DEVICE_COOKIE_SALT, max_age=DEVICE_COOKIE_MAX_AGE
        )
    except (signing.BadSignature, ValueError):
        return "", "tampered"
    if not (key.isascii() and key.isalnum() and len(key) == 32):
        return "", "tampered"
    return key, "valid"


class DeviceMiddleware:
    """Give each browser a random device id it cannot forge; a tampered one is replaced.

    ``request.device_id`` is the id (recorded on the timeline, read by the risk checkpoint);
    ``request.device_cookie`` says whether it came back signed, was new, or was tampered with.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key, state = read_device_cookie(request)
        if state != "valid":
            key = secrets.token_hex(16)
        request.device_id = key
        request.device_cookie = state
        response = self.get_response(request)
        if state != "valid":
            response.set_signed_cookie(
                DEVICE_COOKIE,
                key,
                salt=DEVICE_COOKIE_SALT,
                max_age=DEVICE_COOKIE_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        return response
