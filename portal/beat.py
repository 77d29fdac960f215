"""Exactly one beat across the fleet: RedBeat's schedule and lock in Redis, kept through a restart.

RedBeat (celery-redbeat) keeps the schedule in Redis and lets beat send tasks only while it
holds a lock there; a second beat blocks on the lock and takes over when the first one dies
(the lock expires ``CELERY_BEAT_LOCK_SECONDS`` after its last renewal). On its own, RedBeat ends
beat when Redis restarts: the lock and the schedule were in memory only, renewing the lost lock
raises, and a schedule that is gone would send nothing anyway. This scheduler waits out the
outage instead, then takes the lock again (or waits behind whichever beat took it first) and
installs the schedule again before sending anything.
"""

import logging
import time

from redbeat import RedBeatScheduler
from redbeat.schedulers import acquire_distributed_beat_lock, get_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# Seconds to wait before trying again while Redis does not answer.
OUTAGE_RETRY_SECONDS = 1.0
# The lock is renewed (and a waiting beat tries for it) this many times within its timeout.
RENEWALS_PER_LOCK_TIMEOUT = 6


class _BeatService:
    """What ``acquire_distributed_beat_lock`` expects as its sender: something with a scheduler."""

    def __init__(self, scheduler: RedBeatScheduler) -> None:
        self.scheduler = scheduler


class LockedScheduler(RedBeatScheduler):
    def __init__(self, app, **kwargs) -> None:
        super().__init__(app, **kwargs)
        # Beat sleeps up to its loop interval between ticks (Celery's default: five minutes), and
        # a waiting beat polls the lock at that interval too. Both must come well within the
        # lock's timeout, or the holder loses its lock while asleep and a dead holder's successor
        # waits minutes instead of the timeout.
        self.max_interval = min(
            self.max_interval, max(1.0, self.lock_timeout / RENEWALS_PER_LOCK_TIMEOUT)
        )

    def tick(self, *args, **kwargs) -> float:
        try:
            if self.lock_key and self.lock is None:
                # Redis did not answer when beat started, so beat_init could not take the lock.
                self._hold_the_lock_again()
                return 0.0
            return super().tick(*args, **kwargs)
        except LockError as error:
            # Redis lost the lock (a restart without persistence) or another beat holds it
            # since ours expired: send nothing until this beat holds it again. A pause first,
            # so that whatever took the lock away cannot make beat spin.
            logger.warning(
                "beat lost its lock (%s); waiting to hold it again before sending anything", error
            )
            time.sleep(OUTAGE_RETRY_SECONDS)
            self._hold_the_lock_again()
            return 0.0
        except (RedisConnectionError, RedisTimeoutError) as error:
            logger.warning("beat cannot reach Redis (%s); trying again", type(error).__name__)
            return OUTAGE_RETRY_SECONDS

    @property
    def schedule(self) -> dict:
        """Return the due entries; install the schedule again first if Redis lost it.

        Read once a tick, after the lock was renewed. A beat that was waiting for the lock when
        Redis lost everything takes the vanished lock at once, without passing through
        ``_hold_the_lock_again``, and would otherwise hold the lock over an empty schedule.
        """
        if not get_redis(self.app).exists(self.app.redbeat_conf.statics_key):
            logger.warning("beat found no schedule in Redis; installing it again")
            self.setup_schedule()
        return super().schedule

    def _hold_the_lock_again(self) -> None:
        self.lock = None
        while True:
            try:
                # Blocks while another beat holds the lock.
                acquire_distributed_beat_lock(sender=_BeatService(self))
                # Installs the schedule again where Redis lost it; entries still there keep
                # their last run, so nothing runs twice in a period.
                self.setup_schedule()
                return
            except (RedisConnectionError, RedisTimeoutError):
                time.sleep(OUTAGE_RETRY_SECONDS)
