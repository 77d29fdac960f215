"""A shared service that does not answer, told apart from a bug: 503 and "try again", not 500.

When PostgreSQL restarts, Redis restarts or PgBouncer cannot log in for a moment, the request
that met it fails through no fault of its own and would pass a few seconds later. Django would
answer 500 (our bug); the answer is 503 with ``Retry-After`` instead, a page that says to try
again (or the API's envelope), and the load balancer's and Prometheus' figures keep the two
apart. Nothing on the way to the answer touches the database or the cache again.
"""

import sys

import redis.exceptions
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

RETRY_AFTER_SECONDS = 5
OUTAGES = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def is_outage(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from or while handling, is an outage."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OUTAGES) and not _is_a_query_error(error):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _is_a_query_error(error: BaseException) -> bool:
    # OperationalError also covers a query's own faults (a lock timeout, a cancelled statement):
    # psycopg tells them apart by SQLSTATE. Connection failures have none or class 08/57P.
    cause = error.__cause__ if isinstance(error, DatabaseError) else None
    sqlstate = getattr(cause, "sqlstate", None) or ""
    return bool(sqlstate) and not sqlstate.startswith(("08", "57P"))


def during_an_outage() -> bool:
    """Whether the exception being handled now is an outage (for the 500 handler)."""
    return is_outage(sys.exc_info()[1])


def unavailable(request: HttpRequest) -> HttpResponse:
    message = _(
        "We could not finish this just now. Nothing you sent was lost. "
        "Please try again in a few seconds."
    )
    if request.path.startswith("/api/"):
        response = JsonResponse(
            {"code": "temporarily_unavailable", "message": message, "details": {}}, status=503
        )
    else:
        # A page of its own: the site's layout reads the user, from the database or the cache.
        html = render_to_string("unavailable.html", {"message": message}, request=None)
        response = HttpResponse(html, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
