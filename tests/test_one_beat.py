"""Exactly one beat sends across the fleet, also after its holder dies or Redis loses everything.

Real beat processes (portal.beat.LockedScheduler) on this test's own Redis database, which holds
the broker queue, RedBeat's lock and its schedule alike. Nothing consumes the queue, so every
message beat sent stays there to be counted; each beat's log says which of them sent it. The
outbox sweep runs every second and the lock times out after six, to keep the tests short.
"""

import json
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from django.conf import settings

from .fixtures import wait_until
from .processes import Process, portal_env, start_beat

pytestmark = [pytest.mark.redis]

SWEEP_TASK = "activation.tasks.sweep_core_outbox"
SWEEP_PERIOD_SECONDS = 1
LOCK_SECONDS = 6
# How long the tests watch beat send: long enough that a second sender would double the count.
WINDOW_SECONDS = 6
SENDING = "Sending due task sweep-core-outbox"
ACQUIRED = "beat: Acquired lock"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    # A lock of its own per test: parallel runs never wait behind each other's beat.
    return f"test-one-beat:{request.node.name}"


@pytest.fixture
def beats(tmp_path, client, key_prefix) -> Iterator[Callable[[str], Process]]:
    env = portal_env(
        CELERY_REDBEAT_KEY_PREFIX=key_prefix,
        CELERY_BEAT_LOCK_SECONDS=str(LOCK_SECONDS),
        ACTIVATION_SWEEP_INTERVAL_SECONDS=str(SWEEP_PERIOD_SECONDS),
    )
    started: list[Process] = []

    def start(name: str) -> Process:
        started.append(start_beat(tmp_path, env, name=name))
        return started[-1]

    yield start
    for process in started:
        if process.alive():
            process.resume()  # a paused beat would sleep through SIGTERM
        process.stop()


def sends(process: Process) -> int:
    """How many sweeps this beat says it sent."""
    return process.output().count(SENDING)


def queued_sweeps(client: redis.Redis) -> int:
    """How many sweeps wait in the broker queue (nothing consumes it)."""
    return sum(
        json.loads(message)["headers"]["task"] == SWEEP_TASK
        for message in client.lrange("celery", 0, -1)
    )


def the_holder(*processes: Process) -> Process | None:
    holders = [process for process in processes if ACQUIRED in process.output()]
    assert len(holders) <= 1, "two beats acquired the lock"
    return holders[0] if holders else None


def describe(*processes: Process) -> str:
    return "\n".join(f"--- {process.name}\n{process.output()}" for process in processes)


def test_of_two_beats_only_the_lock_holder_sends(beats, client):
    first, second = beats("beat-1"), beats("beat-2")
    holder = wait_until(lambda: the_holder(first, second), timeout=10, what="a lock holder")
    waiter = second if holder is first else first
    wait_until(lambda: sends(holder) >= 1, timeout=15, what="the holder's first sweep")
    started, queued_before = time.monotonic(), queued_sweeps(client)

    time.sleep(WINDOW_SECONDS)

    queued = queued_sweeps(client) - queued_before
    elapsed = time.monotonic() - started
    assert sends(waiter) == 0 and ACQUIRED not in waiter.output(), describe(first, second)
    # Once a period, not twice: two senders would have queued about 2 × elapsed.
    assert elapsed * 0.6 <= queued <= elapsed / SWEEP_PERIOD_SECONDS + 1, (queued, elapsed)
    # Every queued sweep is one the holder said it sent (it logs just before it sends).
    assert sends(holder) - 1 <= queued_sweeps(client) <= sends(holder)
    assert first.alive() and second.alive()


def test_when_the_holder_is_killed_the_other_beat_takes_over_within_the_lock_timeout(beats, client):
    first, second = beats("beat-1"), beats("beat-2")
    holder = wait_until(lambda: the_holder(first, second), timeout=10, what="a lock holder")
    waiter = second if holder is first else first
    wait_until(lambda: sends(holder) >= 1, timeout=15, what="the holder's first sweep")
    assert sends(waiter) == 0

    holder.kill()
    killed = time.monotonic()
    wait_until(
        lambda: sends(waiter) >= 1, timeout=LOCK_SECONDS + 4, what="the other beat's first sweep"
    )

    took_over = time.monotonic() - killed
    print(f"the other beat sent its first sweep {took_over:.1f} s after the holder's death")
    # The lock lapses at most LOCK_SECONDS after the last renewal; the waiter tries every
    # second, and the sweep is due within one more period.
    assert took_over <= LOCK_SECONDS + 2 * SWEEP_PERIOD_SECONDS + 1
    assert waiter.output().count(ACQUIRED) == 1
    time.sleep(2 * SWEEP_PERIOD_SECONDS)
    assert queued_sweeps(client) >= sends(holder) + 2


def test_a_beat_keeps_running_when_redis_loses_everything_and_sends_again(
    beats, client, key_prefix
):
    beat = beats("beat")
    wait_until(lambda: sends(beat) >= 1, timeout=10, what="the first sweep")

    client.flushdb()  # lock, schedule and queue are gone, as after a restart without persistence
    lost = time.monotonic()

    wait_until(lambda: client.exists(f"{key_prefix}:lock"), timeout=3, what="the lock again")
    wait_until(lambda: queued_sweeps(client) >= 1, timeout=15, what="a sweep after the loss")
    print(f"beat sent again {time.monotonic() - lost:.1f} s after Redis lost everything")
    assert beat.alive(), beat.output()
    assert beat.output().count(ACQUIRED) == 2  # at start, and again after the loss
    assert client.exists(f"{key_prefix}:statics"), "the schedule was not installed again"
    time.sleep(3 * SWEEP_PERIOD_SECONDS)
    assert queued_sweeps(client) >= 3
    assert beat.alive(), beat.output()


def test_after_redis_loses_everything_still_only_one_of_two_beats_sends(beats, client):
    first, second = beats("beat-1"), beats("beat-2")
    holder = wait_until(lambda: the_holder(first, second), timeout=10, what="a lock holder")
    waiter = second if holder is first else first
    wait_until(lambda: sends(holder) >= 1, timeout=15, what="the holder's first sweep")

    # The holder is paused while Redis loses everything, so the waiting beat takes the vanished
    # lock first and finds no schedule under it.
    holder.pause()
    client.flushdb()
    # The waiter polls the lock every LOCK_SECONDS / 6; a loaded CI machine needs a margin.
    wait_until(
        lambda: sends(waiter) >= 1, timeout=LOCK_SECONDS + 9, what="the other beat's first sweep"
    )
    holder.resume()
    # The old holder's next tick finds its lock gone: from then on it sends nothing.
    wait_until(
        lambda: "beat lost its lock" in holder.output(),
        timeout=15,
        what="the old holder to back off",
    )
    holder_sends, waiter_sends = sends(holder), sends(waiter)
    started, queued_before = time.monotonic(), queued_sweeps(client)

    time.sleep(WINDOW_SECONDS)

    queued = queued_sweeps(client) - queued_before
    elapsed = time.monotonic() - started
    assert sends(holder) == holder_sends, describe(first, second)
    assert holder.output().count(ACQUIRED) == 1  # it waits behind the other for the lock
    assert sends(waiter) - waiter_sends >= elapsed * 0.6
    assert elapsed * 0.6 <= queued <= elapsed / SWEEP_PERIOD_SECONDS + 1, (queued, elapsed)
    assert first.alive() and second.alive(), describe(first, second)
