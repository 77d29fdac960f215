"""Each request's id: our proxy's when it is trusted and sane, a new one otherwise, never a 500."""

import re

import pytest

from portal import logs
from tests.log_capture import captured_json_logs

pytestmark = pytest.mark.django_db

NEW_ID = re.compile(r"[0-9a-f]{32}")


def test_a_request_without_an_id_gets_a_new_one_in_the_response(client):
    first, second = client.get("/healthz"), client.get("/healthz")
    assert first.status_code == second.status_code == 200
    assert NEW_ID.fullmatch(first["X-Request-ID"])
    assert NEW_ID.fullmatch(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_a_trusted_proxys_id_is_returned_and_carried_by_the_requests_log_lines(client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    with captured_json_logs() as captured:
        response = client.get("/no-such-page/", headers={"X-Request-ID": "lb-7f3a.42"})
    assert response.status_code == 404
    assert response["X-Request-ID"] == "lb-7f3a.42"
    not_found = [r for r in captured.records() if r["message"] == "Not Found: /no-such-page/"]
    assert [r["request_id"] for r in not_found] == ["lb-7f3a.42"]


def test_without_a_trusted_proxy_the_clients_id_is_replaced(client, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    response = client.get("/healthz", headers={"X-Request-ID": "chosen-by-the-client"})
    assert response.status_code == 200
    assert NEW_ID.fullmatch(response["X-Request-ID"])


@pytest.mark.parametrize(
    "offered",
    [
        "x" * 10_000,
        "a" * 129,
        "",
        "abc\x00def",
        "abc\r\nSet-Cookie: sessionid=stolen",
        "\x1b[31mred",
        "two words",
        "first-id,second-id",  # the header sent twice, joined
        'quote"d',
        "caf\xe9",
    ],
    ids=[
        "10 kB",
        "129 characters",
        "empty",
        "NUL",
        "CRLF",
        "escape",
        "space",
        "two headers",
        "quote",
        "non-ASCII",
    ],
)
def test_a_huge_or_malformed_id_from_the_proxy_is_replaced_not_a_500(client, settings, offered):
    settings.TRUSTED_PROXY_COUNT = 1
    with captured_json_logs() as captured:
        response = client.get("/no-such-page/", headers={"X-Request-ID": offered})
    assert response.status_code == 404
    assert NEW_ID.fullmatch(response["X-Request-ID"])
    assert [r["request_id"] for r in captured.records()] == [response["X-Request-ID"]]


def test_a_128_character_id_from_the_proxy_is_kept(client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    offered = "Root=1-67891233-abcdef012345678912345678:" + "a" * 87
    assert len(offered) == 128
    response = client.get("/healthz", headers={"X-Request-ID": offered})
    assert response["X-Request-ID"] == offered


def test_the_signed_in_users_id_joins_the_requests_log_lines(client, customer):
    client.force_login(customer)
    with captured_json_logs() as captured:
        response = client.get("/activation/999999/")  # no such case: a 404 the view logs
    assert response.status_code == 404
    records = captured.records()
    assert [(r["message"], r["user_id"]) for r in records] == [
        ("Not Found: /activation/999999/", customer.pk)
    ]
    assert records[0]["request_id"] == response["X-Request-ID"]


def test_the_log_context_ends_with_the_request(client, customer):
    client.force_login(customer)
    client.get("/activation/")
    assert logs.current() == {}
