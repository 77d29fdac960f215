"""The worker heartbeat: beat queues a task every 30 s, a worker stamps the time in the cache.

The stamp's age tells whether beat, the broker and at least one worker are all alive and
getting through their queue: a worker buried under a backlog stamps late too.
"""

from django.core.cache import cache
from django.utils import timezone

HEARTBEAT_CACHE_KEY = "worker-heartbeat:stamped-at"


def stamp_worker_heartbeat() -> None:
    """Record that a worker ran a task just now."""
    # No expiry: a stamp must grow old, not vanish, when the workers stop.
    cache.set(HEARTBEAT_CACHE_KEY, timezone.now().timestamp(), timeout=None)


def worker_heartbeat_age_seconds() -> float | None:
    """Seconds since a worker last stamped the heartbeat; None if none ever did."""
    stamped_at = cache.get(HEARTBEAT_CACHE_KEY)
    if stamped_at is None:
        return None
    return max(timezone.now().timestamp() - stamped_at, 0.0)
