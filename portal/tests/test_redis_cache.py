"""The Redis cache client kept per process, and rate limits counted in one round trip."""

import pytest
from django.core.cache import caches
from django.test import RequestFactory
from django_ratelimit.core import get_usage

from portal.cache import RedisCache
from portal.ratelimits import client_address_key, seconds_to_wait

pytestmark = pytest.mark.redis

LIMITS = [(client_address_key, "3/10m"), (lambda group, request: "everyone", "5/1h")]


def _request(address: str = "203.0.113.7"):
    return RequestFactory().post("/", REMOTE_ADDR=address)


class CommandCounter:
    """Counts the commands a Redis client sends (pipelines and scripts count once)."""

    def __init__(self, client, monkeypatch) -> None:
        self.commands: list[str] = []
        original = client.execute_command

        def execute_command(*args, **options):
            self.commands.append(str(args[0]))
            return original(*args, **options)

        monkeypatch.setattr(client, "execute_command", execute_command)


@pytest.fixture
def redis_client():
    cache = caches["default"]
    assert isinstance(cache, RedisCache)
    return cache._cache.get_client(write=True)


def test_one_client_serves_every_call():
    cache = caches["default"]
    assert cache._cache.get_client(write=True) is cache._cache.get_client(write=True)
    cache.set("k", 41)
    assert cache.incr("k") == 42


def test_both_limits_are_counted_in_one_round_trip(redis_client, monkeypatch):
    counter = CommandCounter(redis_client, monkeypatch)
    assert seconds_to_wait(_request(), group="g", limits=LIMITS) == 0
    assert len(counter.commands) == 1, counter.commands


def test_counts_in_the_same_counters_as_django_ratelimit():
    request = _request()
    for _ in range(2):
        seconds_to_wait(request, group="g", limits=LIMITS)
    for key, rate in LIMITS:
        usage = get_usage(request, group="g", key=key, rate=rate, increment=False)
        assert usage["count"] == 2


def test_refuses_past_the_limit_with_the_time_left(redis_client):
    request = _request()
    waits = [seconds_to_wait(request, group="g", limits=LIMITS) for _ in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 1 <= waits[3] <= 600
    # Another address has its own counter, the shared one is at 5 after its first request.
    assert seconds_to_wait(_request("198.51.100.9"), group="g", limits=LIMITS) == 0
    refused = seconds_to_wait(_request("198.51.100.10"), group="g", limits=LIMITS)
    assert 1 <= refused <= 3600


def test_every_counter_expires_with_its_window(redis_client):
    seconds_to_wait(_request(), group="g", limits=LIMITS)
    seconds_to_wait(_request(), group="g", limits=LIMITS)
    ttls = sorted(redis_client.ttl(key) for key in redis_client.keys("*rl:*"))
    assert len(ttls) == 2
    assert 0 < ttls[0] <= 600 + 5 and 600 + 5 < ttls[1] <= 3600 + 5
