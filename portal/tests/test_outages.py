"""A service that does not answer gets a 503 and "try again"; a bug still gets a 500."""

import psycopg
import pytest
import redis.exceptions
from django.db import OperationalError
from django.test import Client

from portal import outages
from tests.factories import CustomerFactory

UNREACHABLE_REDIS_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",
    }
}


@pytest.fixture
def browser(db):
    # As a real client meets it: the exception becomes the answer instead of reaching the test.
    return Client(raise_request_exception=False)


def test_a_cache_that_does_not_answer_is_a_503_page_to_try_again(browser, settings):
    customer = CustomerFactory()
    browser.force_login(customer)
    settings.CACHES = UNREACHABLE_REDIS_CACHE
    response = browser.get("/activation/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "Nothing you sent was lost" in response.content.decode()


def test_the_api_answers_an_outage_in_its_envelope(browser, settings):
    settings.CACHES = UNREACHABLE_REDIS_CACHE
    response = browser.post(
        "/api/v1/auth/token/",
        {"username": "someone", "password": "x" * 12, "platform": "android"},
        content_type="application/json",
        HTTP_X_INSTALLATION_ID="inst-a1b2c3d4e5f6a7b8",
    )
    assert response.status_code == 503
    assert response.json()["code"] == "temporarily_unavailable"
    assert response["Retry-After"] == "5"


def test_the_outage_page_is_in_the_customers_language(browser, settings):
    browser.force_login(CustomerFactory())
    settings.CACHES = UNREACHABLE_REDIS_CACHE
    response = browser.get("/activation/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 503
    assert 'lang="zh-hans"' in response.content.decode()
    assert "Please try again in a moment" not in response.content.decode()


def test_a_bug_is_still_a_500_and_an_outage_a_503(rf):
    from portal.urls import server_error

    def answer_while_handling(error: Exception, path: str = "/activation/"):
        try:
            raise error
        except Exception:  # the handler reads the exception being handled
            return server_error(rf.get(path))

    assert answer_while_handling(ZeroDivisionError()).status_code == 500
    api_bug = answer_while_handling(ZeroDivisionError(), "/api/v1/credit-lines/")
    assert (api_bug.status_code, api_bug["Content-Type"]) == (500, "application/json")
    outage = answer_while_handling(redis.exceptions.ConnectionError("refused"))
    assert (outage.status_code, outage["Retry-After"]) == (503, "5")


def database_error(source: psycopg.Error) -> OperationalError:
    try:
        try:
            raise source
        except psycopg.Error as error:
            raise OperationalError(str(error)) from error
    except OperationalError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("source", "outage"),
    [
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (psycopg.errors.ProtocolViolation("server login has been failing"), True),
        (psycopg.OperationalError("connection refused"), True),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), False),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
    ],
)
def test_only_a_connection_failure_counts_as_an_outage(source, outage):
    assert outages.is_outage(database_error(source)) is outage
