"""A sign-in reads its account once; a browser it remembers is forgotten on a password change."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.limits import is_known_device
from tests.factories import PASSWORD, CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer():
    return CustomerFactory(username="wang.fang", phone_number="+8613800138001")


def _sign_in(client: Client, username: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


def _account_reads(queries) -> int:
    return sum(
        1
        for query in queries
        if query["sql"].startswith("SELECT") and 'FROM "accounts_user"' in query["sql"]
    )


@pytest.mark.parametrize("typed", ["wang.fang", "138 0013 8001"], ids=["username", "phone"])
def test_a_sign_in_reads_its_account_once(customer, typed):
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        response = _sign_in(client, typed)
    assert response.status_code == 302
    assert _account_reads(queries.captured_queries) == 1


def test_a_wrong_password_is_still_refused_from_the_account_read_once(customer):
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        response = _sign_in(client, "wang.fang", "not the password")
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert _account_reads(queries.captured_queries) == 1


def test_a_browser_remembered_before_a_password_change_is_not_known_after_it(customer):
    client = Client()
    _sign_in(client, "wang.fang")
    token = client.cookies["known_browser_token"].value
    assert is_known_device("wang.fang", token)

    customer.set_password("a new password 2026")
    customer.save()
    assert not is_known_device("wang.fang", token)

    again = Client()
    _sign_in(again, "wang.fang", "a new password 2026")
    assert is_known_device("wang.fang", again.cookies["known_browser_token"].value)
