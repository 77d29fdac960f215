"""The client's address behind our load balancer: trusted proxies count, forged entries do not."""

import pytest

from activation.models import CaseEvent
from tests.factories import CustomerFactory, open_failed_case
from verification.sms import LocmemBackend

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("still_clock")]

PROXY = "10.0.0.2"  # the load balancer, as the web node sees it
ALICE = "203.0.113.10"
BOB = "203.0.113.20"


def through_proxy(client_address: str, forged: str = "") -> dict[str, str]:
    """Request headers as they reach a web node behind one proxy that appends the client."""
    chain = f"{forged}, {client_address}" if forged else client_address
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": chain}


def retry_post(client, customer, **extra):
    case = open_failed_case(customer)
    client.force_login(customer)
    url = f"/activation/{case.pk}/retry/"
    return lambda: client.post(url, {}, **extra).status_code


@pytest.fixture
def address_limit(settings):
    settings.ACTIVATION_RETRY_RATE_PER_IP = "3/m"
    settings.ACTIVATION_RETRY_RATE_PER_CUSTOMER = "100/m"


def test_two_customers_behind_one_trusted_proxy_get_separate_rate_limit_buckets(
    client, settings, address_limit
):
    settings.TRUSTED_PROXY_COUNT = 1
    alice, bob = CustomerFactory(), CustomerFactory()
    alice_posts = retry_post(client, alice, **through_proxy(ALICE))
    assert [alice_posts() for _ in range(3)] == [200, 200, 200]
    assert alice_posts() == 429

    bob_posts = retry_post(client, bob, **through_proxy(BOB))
    assert [bob_posts() for _ in range(3)] == [200, 200, 200]


def test_a_forged_entry_left_of_the_proxys_does_not_escape_the_address_limit(
    client, settings, address_limit
):
    settings.TRUSTED_PROXY_COUNT = 1
    posts = [
        retry_post(client, CustomerFactory(), **through_proxy(ALICE, forged=f"198.51.100.{n}"))()
        for n in range(4)
    ]
    assert posts == [200, 200, 200, 429]


def test_without_a_trusted_proxy_a_forged_header_does_not_escape_the_address_limit(
    client, settings, address_limit
):
    settings.TRUSTED_PROXY_COUNT = 0
    posts = [
        retry_post(
            client,
            CustomerFactory(),
            REMOTE_ADDR=ALICE,
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
        )()
        for n in range(4)
    ]
    assert posts == [200, 200, 200, 429]


def test_an_ipv6_client_counts_by_its_64_block(client, settings, address_limit):
    posts = [
        retry_post(client, CustomerFactory(), REMOTE_ADDR=f"2001:db8:1:2::{n}")()
        for n in range(1, 5)
    ]
    assert posts == [200, 200, 200, 429]


def send_code(client, customer, **extra) -> CaseEvent:
    case = open_failed_case(customer)
    client.force_login(customer)
    client.post(f"/activation/{case.pk}/retry/", {"action": "send", "channel": "sms"}, **extra)
    assert len(LocmemBackend.outbox) == 1
    return CaseEvent.objects.filter(case=case).exclude(ip_address=None)


def test_the_timeline_records_the_customers_address_behind_a_trusted_proxy(
    client, customer, settings
):
    settings.TRUSTED_PROXY_COUNT = 1
    events = send_code(client, customer, **through_proxy(ALICE, forged="198.51.100.1"))
    assert events.exists()
    assert set(events.values_list("ip_address", flat=True)) == {ALICE}


def test_the_timeline_ignores_a_forged_header_without_a_trusted_proxy(client, customer, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    events = send_code(client, customer, **through_proxy(ALICE))
    assert events.exists()
    assert set(events.values_list("ip_address", flat=True)) == {PROXY}


def test_a_request_that_skipped_the_proxy_counts_by_its_socket_address(client, settings):
    settings.TRUSTED_PROXY_COUNT = 2
    # Only one hop in the header although two proxies are trusted: nothing in it is believed.
    events = send_code(client, CustomerFactory(), **through_proxy(ALICE))
    assert set(events.values_list("ip_address", flat=True)) == {PROXY}


# What an outside review found: a stray quote in the client's part of the header made the old
# parser (which honoured quotes) swallow the proxy's entry, and the client chose its address.
QUOTE_TRICKS = [
    '9.9.9.9, "',
    '"9.9.9.9',
    '2a00:1450:4001::99, "',
    '9.9.9.9, "x, 8.8.8.8"',
    "9.9.9.9,,",
]


@pytest.mark.parametrize("forged", QUOTE_TRICKS)
def test_a_quote_in_the_clients_part_cannot_choose_the_recorded_address(
    client, customer, settings, forged
):
    settings.TRUSTED_PROXY_COUNT = 1
    # gunicorn joins the client's header line and the proxy's appended one with a comma.
    extra = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": f"{forged},{ALICE}"}
    events = send_code(client, customer, **extra)
    assert set(events.values_list("ip_address", flat=True)) == {ALICE}


def test_rotating_quote_tricks_does_not_escape_the_address_limit(client, settings, address_limit):
    settings.TRUSTED_PROXY_COUNT = 1
    posts = [
        retry_post(
            client,
            CustomerFactory(),
            REMOTE_ADDR=PROXY,
            HTTP_X_FORWARDED_FOR=f'198.51.100.{n}, ",{ALICE}',
        )()
        for n in range(4)
    ]
    assert posts == [200, 200, 200, 429]


def test_a_web_node_reached_directly_from_outside_believes_no_forwarded_header(
    client, settings, address_limit
):
    # Behind one proxy, but this request came from a public address: not from our proxy.
    settings.TRUSTED_PROXY_COUNT = 1
    posts = [
        retry_post(
            client, CustomerFactory(), REMOTE_ADDR=ALICE, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}"
        )()
        for n in range(4)
    ]
    assert posts == [200, 200, 200, 429]


def test_a_request_id_from_outside_our_network_is_replaced(client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    from_proxy = client.get("/healthz", REMOTE_ADDR=PROXY, HTTP_X_REQUEST_ID="req-from-proxy")
    assert from_proxy["X-Request-ID"] == "req-from-proxy"
    direct = client.get("/healthz", REMOTE_ADDR=ALICE, HTTP_X_REQUEST_ID="victim-req-123")
    assert direct["X-Request-ID"] != "victim-req-123"


@pytest.mark.parametrize(
    ("entry", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("unknown", PROXY),
        ('"203.0.113.7"', PROXY),
    ],
)
def test_the_proxys_entry_is_read_in_the_forms_proxies_write_it(entry, address, rf, settings):
    from portal.middleware import resolve_client_ip

    settings.TRUSTED_PROXY_COUNT = 1
    request = rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"9.9.9.9, {entry}")
    assert resolve_client_ip(request) == address
