import pytest
import time_machine
from django.utils import timezone

from portal import health


@pytest.fixture(autouse=True)
def _ask_the_broker_afresh(monkeypatch):
    monkeypatch.setattr(health, "_last_broker_check", (float("-inf"), None))


@pytest.mark.django_db
def test_healthz_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_database_and_broker(client, settings):
    response = client.get("/readyz")
    body = response.json()
    assert body["checks"]["database"] == "ok"
    if settings.TEST_REDIS_URL:
        assert response.status_code == 200
        assert body["checks"]["broker"] == "ok"


@pytest.mark.django_db
def test_a_broker_outage_is_reported_but_keeps_the_node_in_the_load_balancer(client, monkeypatch):
    # Every web node shares the broker: were it to decide readiness, a broker restart would take
    # every node out of HAProxy at once, while the pages work (the outbox sends the work later).
    from portal.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["broker"] != "ok"
    assert body["checks"]["database"] == "ok"


UNREACHABLE_REDIS_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",
    }
}


@pytest.mark.django_db
def test_readyz_checks_the_cache_with_a_round_trip(client):
    from django.core.cache import cache

    response = client.get("/readyz")
    assert response.json()["checks"]["cache"] == "ok"
    assert not [key for key in _cache_keys(cache) if key.startswith("readyz:")]


def _cache_keys(cache) -> list[str]:
    """What the probe may have left behind, as far as the backend can list it."""
    if hasattr(cache, "_cache") and hasattr(cache._cache, "keys"):  # locmem
        return [key.split(":", 2)[-1] for key in cache._cache]
    client = cache._cache.get_client()  # Django's RedisCache
    return [key.decode().split(":", 2)[-1] for key in client.keys("*")]


@pytest.mark.django_db
def test_readyz_is_503_when_the_cache_is_unreachable(client, settings):
    settings.CACHES = UNREACHABLE_REDIS_CACHE
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["cache"] != "ok"
    assert body["checks"]["database"] == "ok"
    assert body["worker_heartbeat"]["age_seconds"] is None
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_shows_the_heartbeat_a_worker_stamped(client, settings):
    from portal.tasks import stamp_worker_heartbeat

    settings.WORKER_HEARTBEAT_STALE_SECONDS = 120
    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert client.get("/readyz").json()["worker_heartbeat"] == {
            "age_seconds": None,
            "stale": True,
            "stale_after_seconds": 120,
        }
        stamp_worker_heartbeat.delay()
        clock.shift(20)
        fresh = client.get("/readyz")
        clock.shift(200)
        stale = client.get("/readyz")

    assert fresh.json()["worker_heartbeat"] == {
        "age_seconds": 20.0,
        "stale": False,
        "stale_after_seconds": 120,
    }
    assert stale.json()["worker_heartbeat"]["age_seconds"] == 220.0
    assert stale.json()["worker_heartbeat"]["stale"] is True
    # Stopped workers do not take the web nodes out of the load balancer.
    assert stale.status_code == fresh.status_code
    assert stale.json()["status"] == fresh.json()["status"]
    if settings.TEST_REDIS_URL:
        assert stale.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_scrapes_are_given_no_device_cookie(client, path):
    from risk.middleware import DEVICE_COOKIE

    response = client.get(path)
    assert DEVICE_COOKIE not in response.cookies
    assert DEVICE_COOKIE in client.get("/accounts/login/").cookies


@pytest.mark.django_db
def test_readyz_names_the_failure_but_not_the_fleets_hosts(client, monkeypatch, caplog):
    from portal.celery import app

    monkeypatch.setattr(
        app.conf, "broker_url", "amqp://portal:s3cret@rabbit-1.prod.internal:5672//"
    )
    response = client.get("/readyz")
    problem = response.json()["checks"]["broker"]
    assert problem != "ok"
    assert "prod.internal" not in response.content.decode()
    assert "s3cret" not in response.content.decode()
    assert problem == "OperationalError"
    # The operators find the whole message in the log, the password still masked.
    assert "rabbit-1.prod.internal" in caplog.text
    assert "Name or service not known" in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.django_db
def test_the_broker_is_asked_at_most_every_few_seconds(client, monkeypatch):
    asked = []
    monkeypatch.setattr(health, "_ask_the_broker", lambda: asked.append(1))
    for _probe in range(5):
        client.get("/readyz")
    assert len(asked) == 1
    monkeypatch.setattr(health, "_last_broker_check", (float("-inf"), None))
    client.get("/readyz")
    assert len(asked) == 2
