"""The checkpoint's signals one by one: device recognition, network facts, velocity."""

import logging
import os
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from risk import fingerprint
from risk.facts import ClientFacts
from risk.models import Decision, KnownDevice, ListEntry, Moment
from risk.network import address_prefix, forget_staff_ranges, listed_label, network_facts
from risk.rules import KINDS
from risk.services import evaluate, trust_device
from risk.signals import Signals
from tests.factories import CustomerFactory, StaffFactory

from .conftest import (
    IPHONE_FACTS,
    IPHONE_UA,
    PIXEL_FACTS,
    PIXEL_UA,
    PIXEL_UA_UPDATED,
    established_customer,
)

pytestmark = pytest.mark.django_db

ANDROID_HINTS = {"platform": "Android", "mobile": "?1"}
HOME = "203.0.113.10"
NEIGHBOUR = "203.0.113.99"  # same /24 as HOME
ELSEWHERE = "192.0.2.77"


def client(
    device: str = "",
    *,
    cookie: str = "valid",
    address: str | None = HOME,
    user_agent: str = PIXEL_UA,
    language: str = "en-US,en;q=0.9",
    hints: dict | None = None,
    posted: dict | None = None,
    cookie_age: float = 0.0,
) -> ClientFacts:
    return ClientFacts(
        ip_address=address,
        device_key=device,
        device_cookie=cookie if device else "new",
        device_cookie_age=cookie_age,
        user_agent=user_agent,
        accept_language=language,
        hints=ANDROID_HINTS if hints is None and "Android" in user_agent else hints or {},
        posted=PIXEL_FACTS if posted is None else posted,
    )


def similarity(seen: ClientFacts, known: ClientFacts) -> float:
    return fingerprint.similarity(fingerprint.attributes(seen), fingerprint.attributes(known))


# --- fingerprint similarity ------------------------------------------------------------------


def test_the_same_phone_after_a_browser_update_still_matches(settings):
    before = client(user_agent=PIXEL_UA)
    after = client(user_agent=PIXEL_UA_UPDATED)
    assert (
        fingerprint.attributes(before)["browser_major"]
        != (fingerprint.attributes(after)["browser_major"])
    )
    assert similarity(after, before) >= settings.RISK_FINGERPRINT_MATCH


def test_an_iphone_after_a_system_update_still_matches(settings):
    before = client(user_agent=IPHONE_UA, posted=IPHONE_FACTS)
    updated = IPHONE_UA.replace("OS 17_5", "OS 18_0").replace("Version/17.5", "Version/18.0")
    after = client(user_agent=updated, posted=IPHONE_FACTS)
    assert similarity(after, before) >= settings.RISK_FINGERPRINT_MATCH


@pytest.mark.parametrize(
    "difference",
    [
        {"tz": "America/New_York"},
        {"screen": "384x854"},
        {"tz": "Europe/Berlin", "screen": "384x854"},
    ],
)
def test_two_phones_of_the_same_model_with_another_time_zone_or_screen_do_not_match(
    settings, difference
):
    mine = client(posted=PIXEL_FACTS)
    theirs = client(posted={**PIXEL_FACTS, **difference})
    assert similarity(theirs, mine) < settings.RISK_FINGERPRINT_MATCH


def test_another_browser_or_system_never_matches():
    chrome = client(user_agent=PIXEL_UA)
    firefox = client(
        user_agent="Mozilla/5.0 (Android 14; Mobile; rv:127.0) Gecko/127.0 Firefox/127.0"
    )
    iphone = client(user_agent=IPHONE_UA, posted=PIXEL_FACTS)
    assert similarity(firefox, chrome) == 0.0
    assert similarity(iphone, chrome) == 0.0


@pytest.mark.parametrize(
    ("seen", "known"),
    [
        # Two bare requests from the same browser model: the user agent alone proves nothing.
        (client(posted={}, hints={}), client(posted={}, hints={})),
        # The known device had the script's facts, this one has none: only the user agent is
        # left to compare.
        (client(posted={}, hints={}, language=""), client()),
        (client(posted={}, hints={}), client()),
        # Chromium's client hints (platform, mobile) only repeat what the user agent says: two
        # different Pixel 8 with Chrome 126 in English and JavaScript off are not one device.
        (client(posted={}), client(posted={})),
    ],
)
def test_missing_attributes_never_match_on_the_user_agent_alone(seen, known):
    assert similarity(seen, known) == 0.0


# --- network ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "prefix"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),
        ("", ""),
        (None, ""),
        ("not-an-address", ""),
        ("999.1.1.1", ""),
        ("203.0.113.77/24", ""),
        ("203.0.113.77\x00", ""),
        ("x" * 10_000, ""),
    ],
)
def test_address_prefix(address, prefix):
    assert address_prefix(address) == prefix


RANGES = """\
# Commercial VPN exits
198.51.100.0/24 vpn
192.0.2.0/25    hosting   # a cloud provider
2001:db8:abcd::/48 proxy
203.0.113.128/25
100.64.0.0/10 weird-label
this is not a range
10.0.0.0/33 vpn

"""


def test_the_network_list_file_reads_labels_and_comments_and_skips_bad_lines(network_list, caplog):
    path = network_list(RANGES)
    with caplog.at_level(logging.WARNING, logger="risk.network"):
        found = {
            address: listed_label(address)
            for address in (
                "198.51.100.7",
                "192.0.2.5",
                "192.0.2.200",  # outside the /25
                "2001:db8:abcd:1::9",
                "203.0.113.200",
                "203.0.113.5",  # outside the /25
                "100.64.3.4",
                "10.1.1.1",
                "::ffff:198.51.100.7",
                "garbage",
            )
        }
    assert found == {
        "198.51.100.7": "vpn",
        "192.0.2.5": "hosting",
        "192.0.2.200": "",
        "2001:db8:abcd:1::9": "proxy",
        "203.0.113.200": "vpn",  # no label: a VPN range
        "203.0.113.5": "",
        "100.64.3.4": "vpn",  # an unknown label: a VPN range
        "10.1.1.1": "",  # its line was bad
        "::ffff:198.51.100.7": "vpn",  # an IPv4 client on a dual-stack socket
        "garbage": "",
    }
    warnings = [record.getMessage() for record in caplog.records]
    assert f"risk network list {path} line 7 is not a CIDR range" in warnings
    assert f"risk network list {path} line 8 is not a CIDR range" in warnings
    # Each bad line is reported once, not at every lookup.
    assert len(warnings) == 2


def test_an_unreadable_network_list_lists_nothing_and_says_so(settings, tmp_path, caplog):
    settings.RISK_NETWORK_LIST_FILE = str(tmp_path / "missing.txt")
    with caplog.at_level(logging.WARNING, logger="risk.network"):
        assert listed_label("198.51.100.7") == ""
    assert "cannot be read" in caplog.text


def test_a_changed_network_list_file_is_read_again(network_list):
    path = network_list("198.51.100.0/24 vpn\n")
    assert listed_label("192.0.2.5") == ""
    path.write_text("192.0.2.0/24 hosting\n", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert listed_label("192.0.2.5") == "hosting"
    assert listed_label("198.51.100.7") == ""


def test_ranges_staff_keep_are_listed_too(db):
    ListEntry.objects.create(
        kind=ListEntry.Kind.NETWORK,
        value="192.0.2.0/24",
        label="hosting",
        reason="A data centre",
        status=ListEntry.Status.ACTIVE,
        proposed_by=StaffFactory(),
    )
    forget_staff_ranges()
    assert listed_label("192.0.2.44") == "hosting"
    assert listed_label("198.51.100.7") == ""


GEO = {
    "countries": {"203.0.113.0/24": "CN", "192.0.2.0/24": "DE", "2001:db8::/32": "SG"},
    "asns": {"203.0.113.0/24": 4134, "192.0.2.0/24": 64500, "2001:db8::/32": 64501},
}


@pytest.mark.parametrize(
    ("address", "country", "asn"),
    [
        ("203.0.113.10", "CN", 4134),
        ("192.0.2.77", "DE", 64500),
        ("2001:db8:1::5", "SG", 64501),
        ("::ffff:203.0.113.10", "CN", 4134),
        ("198.51.100.7", "", None),  # not in the database
        ("not-an-address", "", None),
        (None, "", None),
    ],
)
def test_country_and_asn_come_from_the_maxmind_database(geoip, address, country, asn):
    geoip(**GEO)
    facts = network_facts(address)
    assert (facts.country, facts.asn) == (country, asn)


def test_without_geoip_databases_country_and_asn_are_unknown(settings):
    settings.RISK_GEOIP_COUNTRY_DB = settings.RISK_GEOIP_ASN_DB = ""
    facts = network_facts("203.0.113.10")
    assert (facts.country, facts.asn) == ("", None)


def test_a_corrupt_geoip_file_means_unknown_never_an_error(settings, tmp_path, caplog):
    corrupt = tmp_path / "half-copied.mmdb"
    corrupt.write_bytes(b"\x00\x01 not a MaxMind database" * 100)
    settings.RISK_GEOIP_COUNTRY_DB = str(corrupt)
    settings.RISK_GEOIP_ASN_DB = str(tmp_path / "missing.mmdb")
    with caplog.at_level(logging.WARNING, logger="risk.network"):
        facts = network_facts("203.0.113.10")
    assert (facts.country, facts.asn, facts.prefix) == ("", None, "203.0.113.0/24")
    assert caplog.text.count("cannot be read") == 2


def test_the_country_and_asn_rules_read_the_geoip_facts(db, geoip):
    geoip(**GEO)
    customer = CustomerFactory()
    from_germany = Signals(
        moment=Moment.CODE_REQUEST, customer=customer, facts=client(address="192.0.2.77")
    )
    from_china = Signals(moment=Moment.CODE_REQUEST, customer=customer, facts=client())
    outside = KINDS["country_not_in"].fires
    listed_asn = KINDS["asn_in"].fires
    assert outside(from_germany, {"countries": ["CN"]})
    assert not outside(from_china, {"countries": ["CN"]})
    assert listed_asn(from_germany, {"asns": [64500]})
    assert not listed_asn(from_china, {"asns": [64500]})
    recorded = evaluate(moment=Moment.SIGN_IN, customer=customer, facts=client("d" * 32))
    assert recorded.signals["network"]["country"] == "CN"
    assert recorded.signals["network"]["asn"] == 4134


# --- velocity --------------------------------------------------------------------------------


def request(customer, facts: ClientFacts) -> None:
    evaluate(moment=Moment.CODE_REQUEST, customer=customer, facts=facts, channel="sms")


def wrong_code(customer, facts: ClientFacts) -> None:
    evaluate(
        moment=Moment.CODE_SUBMIT,
        customer=customer,
        facts=facts,
        channel="sms",
        code_result="code_invalid",
    )


def test_velocity_counts_per_device_prefix_and_customer_within_their_windows(db):
    me, bea, cai, eli, fan, gao = CustomerFactory.create_batch(6)
    shared, others, mine = "a" * 32, "b" * 32, "c" * 32
    now = timezone.now()
    with time_machine.travel(now - timedelta(hours=26), tick=False):
        request(fan, client(shared))  # over a day ago: not counted at all
    with time_machine.travel(now - timedelta(hours=2), tick=False):
        request(eli, client(shared, address=ELSEWHERE))  # a customer of the day, not the hour
        request(me, client(mine, address=ELSEWHERE))
        wrong_code(me, client(mine, address=ELSEWHERE))
    with time_machine.travel(now - timedelta(minutes=30), tick=False):
        request(bea, client(shared))
        request(bea, client(shared, address=NEIGHBOUR))
        wrong_code(cai, client(others, address=NEIGHBOUR))
        request(me, client(mine, address=ELSEWHERE))
        wrong_code(me, client(mine, address=ELSEWHERE))
        evaluate(moment=Moment.SIGN_IN, customer=gao, facts=client(shared, address=ELSEWHERE))
        evaluate(moment=Moment.SIGN_IN, customer=me, facts=client(shared))

    signals = Signals(moment=Moment.CODE_REQUEST, customer=me, facts=client(shared))
    assert signals.velocity == {
        "device_requested": 2,  # bea's two in the hour; eli's is two hours old
        "device_failed": 0,
        "device_customers": 4,  # bea, eli, gao and me (fan is over a day ago)
        "prefix_requested": 2,  # bea's two from the /24
        "prefix_failed": 1,  # cai's wrong code from the neighbour's address
        "prefix_customers": 3,  # bea, cai and me
        "phone_requested": 1,  # mine in the hour (the other is two hours old)
        "phone_failed": 1,
        # Fresh ids that look like this phone on this /24: cai's (another id, same look) and
        # me; bea used this very id, which the device's own crowd counts.
        "look_customers": 2,
    }


def test_a_phone_that_drops_its_cookie_between_accounts_is_counted_by_its_look(db):
    ring = CustomerFactory.create_batch(4)
    for number, customer in enumerate(ring):
        evaluate(moment=Moment.SIGN_IN, customer=customer, facts=client(f"{number:032x}"))
    fifth = CustomerFactory()
    signals = Signals(moment=Moment.CODE_REQUEST, customer=fifth, facts=client("f" * 32))
    assert signals.velocity["device_customers"] == 1  # every account on a fresh cookie
    assert signals.velocity["look_customers"] == 5
    # A device whose id is old is not "fresh": its look is not counted (a returning phone).
    settled = client("f" * 32, cookie_age=7 * 24 * 3600)
    assert Signals(moment=Moment.CODE_REQUEST, customer=fifth, facts=settled).look == ""


def test_a_customer_alone_on_a_fresh_device_counts_as_one(db):
    customer = CustomerFactory()
    signals = Signals(moment=Moment.CODE_REQUEST, customer=customer, facts=client("e" * 32))
    assert signals.velocity["device_customers"] == signals.velocity["prefix_customers"] == 1
    assert signals.velocity["device_requested"] == signals.velocity["phone_failed"] == 0


def test_without_an_address_or_a_device_velocity_still_counts_the_customer(db):
    customer = CustomerFactory()
    request(customer, client(address=None))
    signals = Signals(moment=Moment.CODE_REQUEST, customer=customer, facts=client(address=None))
    assert signals.velocity["phone_requested"] == 1
    assert signals.velocity["device_customers"] == signals.velocity["prefix_customers"] == 1


# --- recognising a returning device ----------------------------------------------------------


@pytest.fixture
def customer_with_known_phone(db):
    """An established customer who proved themselves on their Pixel (device cookie ``1…1``)."""
    customer = established_customer()
    known = client("1" * 32)
    evaluate(moment=Moment.SIGN_IN, customer=customer, facts=known)
    trust_device(customer=customer, facts=known)
    return customer


def test_a_known_device_is_recognised_by_its_cookie(customer_with_known_phone):
    signals = Signals(
        moment=Moment.CODE_REQUEST, customer=customer_with_known_phone, facts=client("1" * 32)
    )
    assert signals.device_recognition[0] == "cookie"
    assert not signals.new_device


def test_a_known_device_whose_cookie_was_cleared_is_recognised_by_its_fingerprint(
    customer_with_known_phone,
):
    cleared = client("2" * 32, cookie="valid", user_agent=PIXEL_UA_UPDATED)
    signals = Signals(moment=Moment.CODE_REQUEST, customer=customer_with_known_phone, facts=cleared)
    how, known = signals.device_recognition
    assert (how, known.device_id) == ("fingerprint", "1" * 32)

    assessment = evaluate(
        moment=Moment.CODE_REQUEST, customer=customer_with_known_phone, facts=cleared
    )
    assert assessment.decision == Decision.ALLOW
    assert "new_device" not in {item["kind"] for item in assessment.live.fired}
    assert assessment.signals["device_recognised"] == "fingerprint"


@pytest.mark.parametrize("changed", ["phone_number_changed_at", "password_reset_at"])
def test_after_a_number_change_or_a_reset_only_the_cookie_recognises_a_device(
    customer_with_known_phone, changed
):
    """A phone that merely looks like the known one (a look-alike, or the same phone with its
    cookie cleared) does not answer a recent number change or password reset."""
    setattr(customer_with_known_phone, changed, timezone.now() - timedelta(days=1))
    kind = {
        "phone_number_changed_at": "phone_changed_new_device",
        "password_reset_at": "password_reset_new_device",
    }[changed]
    params = {"days": 3}
    look_alike = Signals(
        moment=Moment.CODE_REQUEST,
        customer=customer_with_known_phone,
        facts=client("2" * 32, user_agent=PIXEL_UA_UPDATED),
    )
    own = Signals(
        moment=Moment.CODE_REQUEST, customer=customer_with_known_phone, facts=client("1" * 32)
    )
    assert (look_alike.device_recognition[0], own.device_recognition[0]) == (
        "fingerprint",
        "cookie",
    )
    assert KINDS[kind].fires(look_alike, params)
    assert not KINDS[kind].fires(own, params)


def test_a_look_alike_phone_in_another_time_zone_is_a_new_device(customer_with_known_phone):
    look_alike = client("3" * 32, posted={**PIXEL_FACTS, "tz": "Asia/Jakarta"})
    assessment = evaluate(
        moment=Moment.CODE_REQUEST, customer=customer_with_known_phone, facts=look_alike
    )
    assert assessment.signals["device_recognised"] == ""
    assert [item["kind"] for item in assessment.live.fired] == ["new_device"]
    assert assessment.decision == Decision.STEP_UP


def test_a_device_the_customer_never_proved_themselves_on_is_not_recognised(db):
    customer = CustomerFactory()
    used = client("4" * 32)
    evaluate(moment=Moment.SIGN_IN, customer=customer, facts=used)  # seen, never verified
    signals = Signals(moment=Moment.CODE_REQUEST, customer=customer, facts=used)
    assert signals.device_recognition == ("", None)
    # With no device proved anywhere, a first device is not "new": nothing to compare with.
    assert not signals.new_device
    assert KnownDevice.objects.get(customer=customer).verified_at is None


def test_another_customers_verified_device_does_not_vouch_for_this_customer(
    customer_with_known_phone,
):
    stranger = CustomerFactory()
    evaluate(
        moment=Moment.SIGN_IN,
        customer=stranger,
        facts=client("5" * 32, user_agent=IPHONE_UA, posted=IPHONE_FACTS),
    )
    trust_device(customer=stranger, facts=client("5" * 32))
    signals = Signals(moment=Moment.CODE_REQUEST, customer=stranger, facts=client("1" * 32))
    assert signals.device_recognition[0] == ""
    assert signals.new_device


def test_a_cookie_is_recognised_however_many_devices_were_seen_since(customer_with_known_phone):
    # The phone ("1" * 32) was proved long ago; 25 other devices were seen after it.
    for number in range(25):
        key = f"{number:032x}"
        evaluate(
            moment=Moment.SIGN_IN,
            customer=customer_with_known_phone,
            facts=client(key, user_agent=IPHONE_UA, posted=IPHONE_FACTS),
        )
    signals = Signals(
        moment=Moment.CODE_REQUEST, customer=customer_with_known_phone, facts=client("1" * 32)
    )
    assert signals.device_recognition[0] == "cookie"


def test_a_changed_e_mail_address_counts_on_a_device_not_known_by_its_cookie(
    customer_with_known_phone,
):
    customer = customer_with_known_phone
    fires = KINDS["email_changed_new_device"].fires
    look_alike = client("9" * 32)  # the same attributes as the known phone, another cookie
    assert not fires(
        Signals(moment=Moment.CODE_REQUEST, customer=customer, facts=look_alike), {"days": 14}
    )
    customer.email = "someone.else@example.com"
    customer.save()  # User.save stamps email_changed_at
    assert customer.email_changed_at is not None
    assert fires(
        Signals(moment=Moment.CODE_REQUEST, customer=customer, facts=look_alike), {"days": 14}
    )
    own = Signals(moment=Moment.CODE_REQUEST, customer=customer, facts=client("1" * 32))
    assert not fires(own, {"days": 14})
