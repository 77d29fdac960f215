"""Middleware shared by all apps."""

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

DEVICE_COOKIE = "device_id"
DEVICE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600


class DeviceIdMiddleware:
    """Give each browser a random, long-lived id, recorded on the timeline as the device."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        device_id = request.COOKIES.get(DEVICE_COOKIE, "")
        is_new = not (device_id.isalnum() and 16 <= len(device_id) <= 64)
        if is_new:
            device_id = secrets.token_hex(16)
        request.device_id = device_id
        response = self.get_response(request)
        if is_new:
            response.set_cookie(
                DEVICE_COOKIE,
                device_id,
                max_age=DEVICE_COOKIE_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        return response
