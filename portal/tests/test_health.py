import pytest

from portal import health


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
def test_readyz_is_503_when_the_broker_is_down(client, monkeypatch):
    from portal.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] != "ok"
    assert health.healthz  # liveness does not depend on the broker
    assert client.get("/healthz").status_code == 200
