"""Middleware shared by all apps."""

import ipaddress
import re
import time
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from portal import instruments, logs


def from_a_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the request came through proxies of our own, so their headers may be believed.

    ``TRUSTED_PROXY_COUNT`` says how many stand in front; the nearest one must also connect
    from ``TRUSTED_PROXY_NETWORKS`` (the private networks by default). A web node reached
    directly from elsewhere, by mistake or through a hole in the firewall, then believes none
    of what the client wrote.
    """
    if not settings.TRUSTED_PROXY_COUNT:
        return False
    try:
        nearest = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "")
    except ValueError:
        return False
    if nearest.version == 6 and nearest.ipv4_mapped is not None:
        nearest = nearest.ipv4_mapped
    return any(nearest in network for network in settings.TRUSTED_PROXY_NETWORKS)


def _forwarded_address(entry: str) -> str | None:
    """The address in one ``X-Forwarded-For`` entry: bare, ``[v6]``, ``[v6]:port``, ``v4:port``."""
    entry = entry.strip()
    if entry.startswith("[") and "]" in entry:
        entry = entry[1 : entry.index("]")]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def resolve_client_ip(request: HttpRequest) -> str | None:
    """Return the client's address, looking past ``TRUSTED_PROXY_COUNT`` proxies of our own.

    The nearest proxy is ``REMOTE_ADDR``; each proxy appended the address it saw to
    ``X-Forwarded-For``, so the client is that many entries from the right. Whatever stands
    further left was written by the client and is never read: the entries are split on commas
    only, with no quoting, so nothing the client wrote can swallow or shift the proxies'
    entries (a stray ``"`` once did, through a parser that honoured quotes). With no trusted
    proxy in front the header is ignored, since then the client wrote all of it.
    """
    remote_addr = request.META.get("REMOTE_ADDR") or None
    if not from_a_trusted_proxy(request):
        return remote_addr
    # Several header lines arrive joined by commas, in order.
    entries = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    trusted = settings.TRUSTED_PROXY_COUNT
    if len(entries) < trusted:
        # The request did not come through every proxy: only the socket counts.
        return remote_addr
    # Unreadable where our own proxy wrote: count the request against that proxy, never against
    # an address the client may have chosen.
    return _forwarded_address(entries[-trusted]) or remote_addr


def client_ip(request: HttpRequest) -> str | None:
    """Return the client's address resolved for this request (django-axes' client IP callable)."""
    if not hasattr(request, "client_ip"):
        request.client_ip = resolve_client_ip(request)
    return request.client_ip


def client_address_block(request: HttpRequest) -> str | None:
    """Return the client's address as lock-outs and rate limits count it (django-axes' callable).

    An IPv6 client counts by its /64 network: one subscriber usually holds a whole /64 and could
    otherwise take a fresh address for every guess. An IPv4 address, or one mapped into IPv6 by
    a dual-stack socket, counts whole. The timeline keeps the full address (``client_ip``).
    """
    address = client_ip(request)
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return address
    if parsed.version == 6 and parsed.ipv4_mapped is not None:
        # Not by /64: that would put every IPv4 client of a dual-stack server in one bucket.
        return str(parsed.ipv4_mapped)
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False).network_address)
    return str(parsed)


class ClientAddressMiddleware:
    """Resolve the client's address once, as ``request.client_ip``, for everything after it.

    Lock-outs, rate limits, the timeline and the audit trail all read this one value, never
    ``REMOTE_ADDR``, which behind a load balancer is the balancer's address.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.client_ip = resolve_client_ip(request)
        return self.get_response(request)


REQUEST_ID_HEADER = "X-Request-ID"
# What a request id from our proxy may look like: a uuid, a hex or base64 token, a trace id.
# Anything else (huge, control characters, quotes, several headers joined by commas) is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def resolve_request_id(request: HttpRequest) -> str:
    """Return the id our proxy gave this request in ``X-Request-ID``, or a new one.

    The header is believed only from a trusted proxy (``from_a_trusted_proxy``), which sets or
    replaces it; otherwise the client wrote it, and could make its requests look like
    someone else's in the logs.
    """
    if from_a_trusted_proxy(request):
        offered = request.META.get("HTTP_X_REQUEST_ID", "")
        if _SANE_REQUEST_ID.fullmatch(offered):
            return offered
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Give each request an id, carried by every log line it causes and returned to the caller.

    The id is ``request.request_id`` and the response's ``X-Request-ID``; tasks the request
    enqueues carry it too (``portal.celery``). Once the view is known, so is the user, and their
    id joins the log context. The context lasts until the response is closed: Django logs a 4xx
    response ("Not Found: …") only after every middleware has returned.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = resolve_request_id(request)
        logs.start(request_id=request.request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request.request_id
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            logs.bind(user_id=user.pk)
        return None


@receiver(request_finished, dispatch_uid="portal.middleware.end_request_log_context")
def _end_request_log_context(**_kwargs: Any) -> None:
    logs.clear()


# When the staff session began (second factor verified) and when it was last used, in epoch
# seconds: the session expires when either is too long ago.
STAFF_SESSION_STARTED_KEY = "staff_session_started_at"
STAFF_SESSION_SEEN_KEY = "staff_session_seen_at"
# The last-use time is written at most this often, so browsing does not save the session per page.
STAFF_SESSION_SEEN_RESOLUTION_SECONDS = 60
# Customer pages (by URL namespace or name) that a staff session is kept out of.
CUSTOMER_URL_NAMESPACES = frozenset({"activation"})
CUSTOMER_URL_NAMES = frozenset({"profile", "passkey_registration_options"})


def start_staff_session(request: HttpRequest) -> None:
    """Give a session that just verified a second factor a new id, and start its clocks.

    Django rotates the id only when the signed-in user changes, so a session first signed in by
    password would otherwise keep its id through the second factor.
    """
    request.session.cycle_key()
    now = timezone.now().timestamp()
    request.session[STAFF_SESSION_STARTED_KEY] = now
    request.session[STAFF_SESSION_SEEN_KEY] = now


class StaffSessionMiddleware:
    """Keep staff sessions short and in the back office.

    A staff session ends after ``BACKOFFICE_SESSION_IDLE_MINUTES`` without a request and at
    most ``BACKOFFICE_SESSION_MAX_HOURS`` after it began; staff never use the customer pages,
    so a customer page sends a staff session to the back office instead.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff and self._expired(request):
            logout(request)
            messages.info(request, _("Your back-office session has ended. Please sign in again."))
            return redirect_to_login(request.get_full_path(), reverse("backoffice:login"))
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        match = request.resolver_match
        is_customer_page = match is not None and (
            match.namespace in CUSTOMER_URL_NAMESPACES
            or (not match.namespace and match.url_name in CUSTOMER_URL_NAMES)
        )
        if is_customer_page and request.user.is_authenticated and request.user.is_staff:
            messages.info(request, _("Staff accounts use the back office, not the customer pages."))
            return redirect("backoffice:index")
        return None

    @staticmethod
    def _expired(request: HttpRequest) -> bool:
        session = request.session
        now = timezone.now().timestamp()
        started = session.get(STAFF_SESSION_STARTED_KEY)
        seen = session.get(STAFF_SESSION_SEEN_KEY)
        if not isinstance(started, float | int) or not isinstance(seen, float | int):
            # A staff session that never passed the back office's second factor: it has no
            # access to lose yet, so its clocks start now.
            session[STAFF_SESSION_STARTED_KEY] = session[STAFF_SESSION_SEEN_KEY] = now
            return False
        if (
            now - seen > settings.BACKOFFICE_SESSION_IDLE_MINUTES * 60
            or now - started > settings.BACKOFFICE_SESSION_MAX_HOURS * 3600
        ):
            return True
        if now - seen >= STAFF_SESSION_SEEN_RESOLUTION_SECONDS:
            session[STAFF_SESSION_SEEN_KEY] = now
        return False


@cache
def _backoffice_prefix() -> str:
    # Resolved once: this middleware sees every request, the customers' included.
    return reverse("backoffice:index")


class BackofficeRequestMiddleware:
    """Refuse, under the back office, requests none of its pages is written for.

    Only GET, HEAD and POST reach a page: the admin would render a PUT, DELETE or TRACE as if it
    were a GET. A NUL character in the query string is refused before a change list puts it in
    a PostgreSQL query, which cannot hold one and would fail with a server error.
    """

    ALLOWED_METHODS = ("GET", "HEAD", "POST")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(_backoffice_prefix()):
            if request.method not in self.ALLOWED_METHODS:
                return HttpResponseNotAllowed(self.ALLOWED_METHODS)
            if any("\x00" in key + "".join(values) for key, values in request.GET.lists()):
                return HttpResponseBadRequest(_("The address holds a character no page accepts."))
        return self.get_response(request)


# Methods counted by name; anything else a client invents is counted as "other".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Count and time every request by the view's URL name (never the path: ids in paths would
    make a series per case), method and status."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match is not None else "unmatched"
        method = instruments.bounded(request.method or "", HTTP_METHODS)
        instruments.http_requests.labels(view, method, response.status_code).inc()
        instruments.http_request_duration.labels(view).observe(time.perf_counter() - started)
        return response
