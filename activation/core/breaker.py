"""A circuit breaker around the core, its state shared by every worker through the cache.

Closed: calls go through and consecutive failures are counted. Open (after the threshold): no
call is made until the reset time passes; submissions wait in the outbox. Half-open: one trial
call at a time; its success closes the breaker, its failure opens it again.
"""

import time

from django.conf import settings
from django.core.cache import cache

PREFIX = "core-breaker:"
FAILURES, OPEN_UNTIL, TRIAL = PREFIX + "failures", PREFIX + "open-until", PREFIX + "trial"


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int, reset_seconds: float) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds

    @classmethod
    def from_settings(cls) -> "CircuitBreaker":
        return cls(
            failure_threshold=settings.CORE_BREAKER_FAILURE_THRESHOLD,
            reset_seconds=settings.CORE_BREAKER_RESET_SECONDS,
        )

    def state(self) -> str:
        open_until = cache.get(OPEN_UNTIL)
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
        return cache.add(TRIAL, True, timeout=max(self.reset_seconds, 1))

    def release_trial(self) -> None:
        """Give back a half-open trial that was granted but not used."""
        if self.state() == "half_open":
            cache.delete(TRIAL)

    def record_success(self) -> None:
        cache.delete_many([FAILURES, OPEN_UNTIL, TRIAL])

    def record_failure(self) -> None:
        if cache.get(OPEN_UNTIL) is not None:  # the half-open trial failed
            self._open()
            return
        cache.add(FAILURES, 0, timeout=None)
        if cache.incr(FAILURES) >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        cache.set(OPEN_UNTIL, time.time() + self.reset_seconds, timeout=None)
        cache.delete_many([FAILURES, TRIAL])
