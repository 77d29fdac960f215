"""Per-customer and per-address request limits, with a page that says when to try again."""

import time
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit import ALL
from django_ratelimit.core import (
    EXPIRATION_FUDGE,
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
)

from portal.cache import RedisCache
from portal.middleware import client_address_block

RateKey = Callable[[str, HttpRequest], str]


def client_address_key(group: str, request: HttpRequest) -> str:
    """Key a limit on the client's address as lock-outs count it (an IPv6 client by its /64)."""
    # Resolved behind our proxies, never REMOTE_ADDR; see ``client_address_block`` for the /64.
    address = client_address_block(request)
    if not address:
        # No address at all (a Unix socket without a proxy header): one shared bucket.
        return "address:unknown"
    return f"address:{address}"


def customer_or_address_key(group: str, request: HttpRequest) -> str:
    """Key a limit on the signed-in customer, or on the client's address for anyone else."""
    if request.user.is_authenticated:
        return f"customer:{request.user.pk}"
    return client_address_key(group, request)


# Every limit of a request counted in one round trip: each counter made with its window's expiry
# the first time it is counted, atomically (a counter can never be left without one).
_COUNT_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[i]) end
end
return counts
"""
_count_scripts: dict = {}  # per Redis client (one per process: portal.cache)


def seconds_to_wait(request: HttpRequest, *, group: str, limits: list[tuple[RateKey, str]]) -> int:
    """Count this request against every ``(key, rate)``; return how long to wait (0: go ahead)."""
    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        return _seconds_to_wait_one_by_one(request, group=group, limits=limits)
    # django-ratelimit's own windows and keys (so both count the same), without its three round
    # trips per limit (add, then exists and incr).
    keys, expiries, windows = [], [], []
    for key, rate in limits:
        value = key(group, request)
        limit, period = _split_rate(rate)
        window = _get_window(value, period)
        keys.append(cache.make_and_validate_key(_make_cache_key(group, window, rate, value, ALL)))
        expiries.append(period + EXPIRATION_FUDGE)
        windows.append((limit, window))
    client = cache._cache.get_client(write=True)
    script = _count_scripts.get(client) or _count_scripts.setdefault(
        client, client.register_script(_COUNT_SCRIPT)
    )
    counts = script(keys=keys, args=expiries)
    now = int(time.time())
    waits = [
        max(window - now, 1)
        for (limit, window), count in zip(windows, counts, strict=True)
        if count > limit
    ]
    return max(waits, default=0)


def _seconds_to_wait_one_by_one(
    request: HttpRequest, *, group: str, limits: list[tuple[RateKey, str]]
) -> int:
    """The same count in any other cache (development's file cache, the quick tests' locmem)."""
    waits = []
    for key, rate in limits:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
        if usage and usage["should_limit"]:
            waits.append(max(usage["time_left"], 1))
    return max(waits, default=0)


def too_many_requests(
    request: HttpRequest, seconds: int, *, reason: str = "", back_url: str = ""
) -> HttpResponse:
    """Render the friendly 429 page: why (optional), when to try again, and a way back."""
    context = {"seconds": seconds, "reason": reason, "back_url": back_url}
    response = render(request, "rate_limited.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response


def retry_wait(request: HttpRequest) -> int:
    """Count one retry (a code asked for or submitted, on the web or the app) per customer
    and per address; return how long to wait (0: go ahead)."""
    return seconds_to_wait(
        request,
        group="activation.retry",
        limits=[
            (customer_or_address_key, settings.ACTIVATION_RETRY_RATE_PER_CUSTOMER),
            (client_address_key, settings.ACTIVATION_RETRY_RATE_PER_IP),
        ],
    )


def limit_retry_posts(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer a customer who retries too fast with a friendly 429 instead of doing the work."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            wait = retry_wait(request)
            if wait:
                return too_many_requests(request, wait)
        return view(request, *args, **kwargs)

    return wrapped
