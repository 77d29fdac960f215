"""The first-party device id: a long-lived, signed, HttpOnly cookie."""

import secrets
import time
from collections.abc import Callable

from django.core import signing
from django.http import HttpRequest, HttpResponse

DEVICE_COOKIE = "device_id"
DEVICE_COOKIE_SALT = "risk.device"
DEVICE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600


def read_device_cookie(request: HttpRequest) -> tuple[str, str, float | None]:
    """``(device key, state, age in seconds)``: state is "valid", "new" or "tampered".

    The cookie holds the id and when it was issued ("<32 hex>.<unix time>"), signed.
    """
    if DEVICE_COOKIE not in request.COOKIES:
        return "", "new", None
    try:
        value = request.get_signed_cookie(
            DEVICE_COOKIE, salt=DEVICE_COOKIE_SALT, max_age=DEVICE_COOKIE_MAX_AGE
        )
        key, issued = value.split(".")
        age = time.time() - int(issued)
    except (signing.BadSignature, ValueError):
        return "", "tampered", None
    if not (key.isascii() and key.isalnum() and len(key) == 32):
        return "", "tampered", None
    return key, "valid", max(age, 0.0)


# Machines, not browsers: a load balancer's probe or a Prometheus scrape gets no device id,
# nor does the API (the app names its installation itself, see api/customer/clients.py).
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class DeviceMiddleware:
    """Give each browser a random device id it cannot forge; a tampered one is replaced.

    ``request.device_id`` is the id (recorded on the timeline, read by the risk checkpoint);
    ``request.device_cookie`` says whether it came back signed, was new, or was tampered with;
    ``request.device_cookie_age`` is how long ago the id was issued, in seconds.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key, state, age = read_device_cookie(request)
        if state != "valid":
            key, age = secrets.token_hex(16), 0.0
        request.device_id = key
        request.device_cookie = state
        request.device_cookie_age = age
        response = self.get_response(request)
        if state != "valid" and request.path not in PROBES and not request.path.startswith("/api/"):
            response.set_signed_cookie(
                DEVICE_COOKIE,
                f"{key}.{int(time.time())}",
                salt=DEVICE_COOKIE_SALT,
                max_age=DEVICE_COOKIE_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        return response
