"""Operators' endpoints: liveness, readiness and Prometheus metrics."""

import hashlib
import hmac
import logging
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.celery import app as celery_app

from .heartbeat import worker_heartbeat_age_seconds
from .metrics import CONTENT_TYPE, render_metrics

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer as long as the process serves requests."""
    return JsonResponse({"status": "ok"})


BROKER_CHECK_SECONDS = 1.0


def _problem(check: str, error: Exception, where: str = "") -> str:
    """Log what failed in full; answer only the kind of error.

    The message names hosts, ports and users of the fleet's insides, which the logs may hold
    and the answer to an HTTP request must not.
    """
    logger.warning(
        "readiness: the %s check failed%s: %s: %s",
        check,
        f" ({where})" if where else "",
        type(error).__name__,
        error,
    )
    return type(error).__name__


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # a probe reports any failure instead of raising
        return _problem("database", error)
    return None


# The broker's answer, reused for this long: it does not decide readiness, and a new AMQP
# connection on every probe of every balancer, each second, costs more than the rest of it.
BROKER_CHECK_REUSE_SECONDS = 5.0
_last_broker_check: tuple[float, str | None] = (float("-inf"), None)


def _check_broker() -> str | None:
    global _last_broker_check  # one answer per process, reused for a few seconds
    checked_at, problem = _last_broker_check
    if time.monotonic() - checked_at < BROKER_CHECK_REUSE_SECONDS:
        return problem
    problem = _ask_the_broker()
    _last_broker_check = (time.monotonic(), problem)
    return problem


def _ask_the_broker() -> str | None:
    broker = celery_app.connection_for_write()
    try:
        with broker:
            # Well inside HAProxy's 3 s check timeout, however the broker fails.
            broker.ensure_connection(max_retries=1, timeout=BROKER_CHECK_SECONDS)
    except Exception as error:  # a probe reports any failure instead of raising
        return _problem("broker", error, where=broker.as_uri())  # the password masked
    return None


def _check_cache() -> str | None:
    # A key of its own per probe: probes from several nodes at once never read each other's.
    key, value = f"readyz:{uuid.uuid4().hex}", uuid.uuid4().hex
    try:
        cache.set(key, value, timeout=10)
        read = cache.get(key)
        cache.delete(key)
    except Exception as error:  # a probe reports any failure instead of raising
        return _problem("cache", error)
    return None if read == value else "the cache did not give back what was just stored"


def _worker_heartbeat() -> dict[str, float | bool | str | None]:
    stale_after = settings.WORKER_HEARTBEAT_STALE_SECONDS
    try:
        age = worker_heartbeat_age_seconds()
    except Exception as error:  # the cache check above reports the outage
        return {"age_seconds": None, "stale": True, "problem": type(error).__name__}
    return {
        "age_seconds": None if age is None else round(age, 1),
        "stale": age is None or age > stale_after,
        "stale_after_seconds": stale_after,
    }


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Answer 200 only when the database and the cache answer; report the broker too.

    HAProxy sends requests only to nodes that answer 200 here (deploy/haproxy.cfg). The broker
    and the worker heartbeat are reported but do not decide readiness: every web node shares
    them, so a broker restart or stopped workers would take every node out of the load balancer
    at once, while the pages still work (the work waits in the outbox and the sweep sends it).
    The broker's state is alerted on through /metrics and the logs.
    """
    checks = {"database": _check_database(), "cache": _check_cache(), "broker": _check_broker()}
    ready = checks["database"] is None and checks["cache"] is None
    body = {
        "status": ("ok" if checks["broker"] is None else "degraded") if ready else "unavailable",
        "checks": {name: problem or "ok" for name, problem in checks.items()},
        "worker_heartbeat": _worker_heartbeat(),
    }
    return JsonResponse(body, status=200 if ready else 503)


def _bearer_token(request: HttpRequest) -> str | None:
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _same_secret(given: str, expected: str) -> bool:
    # Digests first: compare_digest refuses non-ASCII text, and equal-length inputs leak nothing
    # about the token's length either.
    def digest(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    return hmac.compare_digest(digest(given), digest(expected))


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The business gauges for Prometheus, behind the read-only ``METRICS_TOKEN``."""
    if not settings.METRICS_TOKEN:
        return HttpResponse(
            "Metrics are off: METRICS_TOKEN is not set.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    token = _bearer_token(request)
    if token is None or not _same_secret(token, settings.METRICS_TOKEN):
        response = HttpResponse(
            "A valid bearer token is required.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE)
