"""Circuit breakers around what we call over the network, their state shared through the cache.

Closed: calls go through and consecutive failures are counted. Open (after the threshold): no
call is made until the reset time passes. Half-open: one trial call at a time; its success
closes the breaker, its failure opens it again. Every process sees the same state, so a whole
fleet of web threads and workers stops waiting on a dependency that is down.
"""

import time

from django.conf import settings
from django.core.cache import cache


class CircuitBreaker:
    def __init__(self, name: str, *, failure_threshold: int, reset_seconds: float) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        prefix = f"{name}-breaker:"
        self._failures = prefix + "failures"
        self._open_until = prefix + "open-until"
        self._trial = prefix + "trial"

    def state(self) -> str:
        open_until = cache.get(self._open_until)
        if open_until is None:
            return "closed"
        return "open" if time.time() < open_until else "half_open"

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one caller gets a yes."""
        state = self.state()
        if state == "closed":
            return True
        if state == "open":
            return False
        # cache.add is atomic: of many workers asking at once, one runs the trial call.
        return cache.add(self._trial, True, timeout=max(self.reset_seconds, 1))

    def release_trial(self) -> None:
        """Give back a half-open trial that was granted but not used."""
        if self.state() == "half_open":
            cache.delete(self._trial)

    def record_success(self) -> None:
        cache.delete_many([self._failures, self._open_until, self._trial])

    def record_failure(self) -> None:
        if cache.get(self._open_until) is not None:  # the half-open trial failed
            self._open()
            return
        cache.add(self._failures, 0, timeout=None)
        if cache.incr(self._failures) >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        cache.set(self._open_until, time.time() + self.reset_seconds, timeout=None)
        cache.delete_many([self._failures, self._trial])


def core_breaker() -> CircuitBreaker:
    """The core's breaker: while open, submissions wait in the outbox."""
    return CircuitBreaker(
        "core",
        failure_threshold=settings.CORE_BREAKER_FAILURE_THRESHOLD,
        reset_seconds=settings.CORE_BREAKER_RESET_SECONDS,
    )


def sms_gateway_breaker() -> CircuitBreaker:
    """The SMS gateway's breaker: while open, a code by SMS fails at once and the customer is
    offered the other channels, instead of every request waiting out the gateway's timeouts."""
    return CircuitBreaker(
        "sms-gateway",
        failure_threshold=settings.SMS_GATEWAY_BREAKER_FAILURE_THRESHOLD,
        reset_seconds=settings.SMS_GATEWAY_BREAKER_RESET_SECONDS,
    )
