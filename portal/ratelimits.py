"""Per-customer and per-address request limits, with a page that says when to try again."""

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage


def seconds_to_wait(request: HttpRequest, *, group: str, limits: list[tuple[str, str]]) -> int:
    """Count this request against every ``(key, rate)``; return how long to wait (0: go ahead)."""
    waits = []
    for key, rate in limits:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
        if usage and usage["should_limit"]:
            waits.append(max(usage["time_left"], 1))
    return max(waits, default=0)


def limit_retry_posts(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer a customer who retries too fast with a friendly 429 instead of doing the work."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            wait = seconds_to_wait(
                request,
                group="activation.retry",
                limits=[
                    ("user_or_ip", settings.ACTIVATION_RETRY_RATE_PER_CUSTOMER),
                    ("ip", settings.ACTIVATION_RETRY_RATE_PER_IP),
                ],
            )
            if wait:
                response = render(request, "rate_limited.html", {"seconds": wait}, status=429)
                response["Retry-After"] = str(wait)
                return response
        return view(request, *args, **kwargs)

    return wrapped
