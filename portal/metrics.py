"""Business gauges for Prometheus, computed from the database and the cache at each scrape.

Every value is read when Prometheus asks, by four aggregate queries over open cases and
undelivered outbox rows only (indexed, so a scrape costs the same with a million settled cases
as with none), so nothing is kept in process memory and every web process answers the same.
Settled cases (activated, closed) are not counted here: they only accumulate; their rate is
for the counters in the code paths (``portal.instruments``), which share the page. The page is
built on a registry of its own: nothing else from a library's default registry (or another
test) ends up on it.
"""

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from activation import selectors
from activation.models import OPEN_STATES, CaseState, FailureReason
from activation.services.emergency import core_submissions_paused

from . import instruments
from .breaker import CircuitBreaker, core_breaker, sms_gateway_breaker
from .heartbeat import worker_heartbeat_age_seconds

logger = logging.getLogger(__name__)

PREFIX = "activation_rescue_"
BREAKER_STATES = ("closed", "open", "half_open")
STATES_COUNTED_BY_REASON = (CaseState.FAILED, CaseState.NEEDS_REVIEW)


def _breakers() -> dict[str, CircuitBreaker]:
    return {"core": core_breaker(), "sms_gateway": sms_gateway_breaker()}


@dataclass(frozen=True)
class CacheReadings:
    """What the cache holds about the system's safety: each breaker's state, the heartbeat."""

    breakers: dict[str, str]  # "core", "sms_gateway" -> "closed" / "open" / "half_open"
    heartbeat_age: float | None  # seconds; None if no worker ever ran the heartbeat


def read_cache() -> CacheReadings | None:
    """The breakers and the worker heartbeat, or None (logged) if the cache did not answer."""
    try:
        states = {name: breaker.state() for name, breaker in _breakers().items()}
        return CacheReadings(breakers=states, heartbeat_age=worker_heartbeat_age_seconds())
    except Exception:  # any cache client error
        logger.warning("The cache did not answer: breakers and worker heartbeat unknown")
        return None


class BusinessCollector(Collector):
    """Yield the portal's gauges, read fresh from the database and the cache."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from self._cases()
        yield from self._open_case_watch(now)
        yield from self._outbox(now)
        yield GaugeMetricFamily(
            PREFIX + "core_submissions_paused",
            "1 while the emergency switch holds submissions to the core, else 0.",
            value=int(core_submissions_paused()),
        )
        yield from self._from_cache()

    def _cases(self) -> Iterator[Metric]:
        counts = selectors.open_case_counts()
        by_state = GaugeMetricFamily(
            PREFIX + "open_cases", "Open activation cases in each state.", labels=["state"]
        )
        for state in CaseState.values:
            if state in OPEN_STATES:
                total = sum(n for (s, _reason), n in counts.items() if s == state)
                by_state.add_metric([state], total)
        yield by_state
        by_reason = GaugeMetricFamily(
            PREFIX + "open_cases_by_failure_reason",
            "Failed and in-review cases by their failure reason.",
            labels=["state", "failure_reason"],
        )
        for state in STATES_COUNTED_BY_REASON:
            for reason in FailureReason.values:
                by_reason.add_metric([state, reason], counts.get((state, reason), 0))
        yield by_reason

    def _open_case_watch(self, now: datetime) -> Iterator[Metric]:
        watch = selectors.open_case_watch(now)
        yield GaugeMetricFamily(
            PREFIX + "cases_awaiting_confirmation_past_poll_time",
            "Cases the core accepted but has not confirmed within "
            "ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS (reconciliation polls them).",
            value=watch.awaiting_confirmation_past_poll_time,
        )
        yield GaugeMetricFamily(
            PREFIX + "cases_past_sla",
            "Open cases whose SLA (sla_due_at) has passed.",
            value=watch.past_sla,
        )
        yield GaugeMetricFamily(
            PREFIX + "review_cases_unassigned",
            "Cases waiting for staff review that nobody is assigned to.",
            value=watch.unassigned_in_review,
        )

    def _outbox(self, now: datetime) -> Iterator[Metric]:
        backlog = selectors.outbox_backlog(now)
        yield GaugeMetricFamily(
            PREFIX + "outbox_due_requests",
            "Outbox rows due for delivery to the core now (including expired leases).",
            value=backlog.due,
        )
        yield GaugeMetricFamily(
            PREFIX + "outbox_in_flight_requests",
            "Outbox rows being delivered under a lease that has not run out.",
            value=backlog.in_flight,
        )
        oldest = backlog.oldest_due_since
        yield GaugeMetricFamily(
            PREFIX + "outbox_oldest_due_age_seconds",
            "How long the oldest due outbox row has been waiting; 0 when none is due.",
            value=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )

    def _from_cache(self) -> Iterator[Metric]:
        # The cache holds the breakers and the heartbeat. If it is down, /readyz says so; the
        # database gauges above are still worth a scrape, so these samples are left out.
        readings = read_cache()
        if readings is None:
            return
        states, heartbeat_age = readings.breakers, readings.heartbeat_age
        breakers = GaugeMetricFamily(
            PREFIX + "circuit_breaker_state",
            "1 on each circuit breaker's current state (closed, open or half_open).",
            labels=["breaker", "state"],
        )
        for name, current in states.items():
            for state in BREAKER_STATES:
                breakers.add_metric([name, state], int(state == current))
        yield breakers
        yield GaugeMetricFamily(
            PREFIX + "worker_heartbeat_age_seconds",
            "Seconds since a Celery worker last ran the heartbeat task; +Inf if never.",
            value=math.inf if heartbeat_age is None else heartbeat_age,
        )


# The classic text format (0.0.4), which every Prometheus version reads; no content negotiation,
# so no Accept header a scraper (or anyone) sends can change or break the answer.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def render_metrics() -> bytes:
    """The gauges and the code paths' counters in the text exposition format (``CONTENT_TYPE``).

    With ``PROMETHEUS_MULTIPROC_DIR`` set, the counters are those every process (web workers,
    Celery children) wrote there, added up; without it, this process's own.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BusinessCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for metric in instruments.ALL:
            registry.register(metric)
    return generate_latest(registry)
