"""Fixtures for the checkpoint's tests: customers' phones, a VPN list, a small GeoIP database.

A ``Phone`` is a Django test client that keeps one browser's headers, address and device
cookie, and posts the facts the device script would add, so the checkpoint sees what a real
phone shows it, through the real sign-in and retry views.
"""

import base64
import importlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from django.apps import apps
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from activation.models import ActivationCase, CaseEvent
from risk.middleware import DEVICE_COOKIE, read_device_cookie
from risk.network import forget_staff_ranges
from tests.factories import PASSWORD, CustomerFactory

PIXEL_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.122 Mobile Safari/537.36"
)
PIXEL_UA_UPDATED = PIXEL_UA.replace("Chrome/126.0.6478.122", "Chrome/127.0.6533.64")
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
# What static/js/device.js posts on these phones.
PIXEL_FACTS = {
    "screen": "412x915",
    "dpr": "2.63",
    "tz": "Asia/Shanghai",
    "platform": "Linux armv81",
    "touch": "5",
}
IPHONE_FACTS = {
    "screen": "390x844",
    "dpr": "3",
    "tz": "Asia/Shanghai",
    "platform": "iPhone",
    "touch": "5",
}
HOME_ADDRESS = "203.0.113.10"
OFFICE_ADDRESS = "192.0.2.77"
VPN_RANGE = "198.51.100.0/24"
VPN_ADDRESS = "198.51.100.23"
# How old an established customer's account is: well past the default rules' young week.
ESTABLISHED_FOR = timedelta(days=180)


def load_default_rule_set() -> None:
    """Put back the default rule set v1 when a transactional test's flush removed it."""
    migration = importlib.import_module("risk.migrations.0002_default_rule_set_and_roles")
    migration.create_default_rule_set(apps, None)  # does nothing while any version exists


def established_customer(**kwargs):
    """A customer whose account is months old, as a returning customer's (or a victim's) is.

    The factory's customers join "now", and the default rules add score to accounts younger than
    a week; a test about anything else starts from an established account.
    """
    return CustomerFactory(date_joined=timezone.now() - ESTABLISHED_FOR, **kwargs)


@pytest.fixture(autouse=True)
def default_rule_set(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
        load_default_rule_set()
    elif marker or "db" in request.fixturenames:
        request.getfixturevalue("db")
        load_default_rule_set()
    forget_staff_ranges()


@dataclass
class Phone:
    """One browser on one phone: fixed headers, an address, a cookie jar, the script's facts."""

    client: Client
    facts: dict | None = None

    def post(self, url: str, data: dict, **kwargs):
        data = dict(data)
        if self.facts is not None and "device_facts" not in data:
            data["device_facts"] = json.dumps(self.facts)
        return self.client.post(url, data, **kwargs)

    def get(self, url: str, **kwargs):
        return self.client.get(url, **kwargs)

    def move_to(self, address: str) -> None:
        self.client.defaults["REMOTE_ADDR"] = address

    @property
    def device_key(self) -> str:
        morsel = self.client.cookies.get(DEVICE_COOKIE)
        assert morsel is not None, "this phone has no device cookie yet"
        request = RequestFactory().get("/")
        request.COOKIES[DEVICE_COOKIE] = morsel.value
        key, state, _age = read_device_cookie(request)
        assert state == "valid"
        return key

    def sign_in(self, user, data: dict | None = None, **kwargs):
        """Sign in afresh (a new session), keeping the device cookie; ``data`` adds fields."""
        self.client.cookies.pop("sessionid", None)
        fields = {"username": user.username, "password": PASSWORD, **(data or {})}
        return self.post(reverse("login"), fields, **kwargs)

    def send(self, case: ActivationCase, channel: str = "sms", **kwargs):
        return self.post(
            reverse("activation:retry", args=[case.pk]),
            {"action": "send", "channel": channel},
            **kwargs,
        )

    def use_app(self, case: ActivationCase, **kwargs):
        return self.post(
            reverse("activation:retry", args=[case.pk]), {"action": "use_app"}, **kwargs
        )

    def verify(self, case: ActivationCase, code: str, **kwargs):
        return self.post(
            reverse("activation:retry", args=[case.pk]),
            {"action": "verify", "code": code, "submission_id": str(uuid.uuid4())},
            **kwargs,
        )


def make_phone(
    *,
    user_agent: str = PIXEL_UA,
    facts: dict | None = None,
    address: str = HOME_ADDRESS,
    language: str = "en-US,en;q=0.9",
    hints: bool = True,
    **extra: str,
) -> Phone:
    """A phone's browser; ``extra`` sets or overrides request headers (``HTTP_…``)."""
    headers = {"HTTP_USER_AGENT": user_agent, "HTTP_ACCEPT_LANGUAGE": language}
    if hints and "Android" in user_agent:
        headers |= {"HTTP_SEC_CH_UA_PLATFORM": '"Android"', "HTTP_SEC_CH_UA_MOBILE": "?1"}
    client = Client(REMOTE_ADDR=address, **{**headers, **extra})
    return Phone(client=client, facts=facts)


@pytest.fixture
def phone() -> Callable[..., Phone]:
    """``phone(...)`` builds a customer's phone (see ``make_phone``)."""
    return make_phone


def app_code(user) -> str:
    """The code the customer's authenticator app shows now."""
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    return pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()


def give_app(user, *, days_ago: float = 60) -> TOTPDevice:
    """An authenticator app the customer set up ``days_ago`` (a step-up wants one they had)."""
    device = TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=True)
    TOTPDevice.objects.filter(pk=device.pk).update(
        created_at=timezone.now() - timedelta(days=days_ago)
    )
    return device


def risk_events(case: ActivationCase) -> list[dict]:
    """The data of the case's ``risk.evaluated`` events, oldest first."""
    return list(
        CaseEvent.objects.filter(case=case, kind="risk.evaluated")
        .order_by("seq")
        .values_list("data", flat=True)
    )


def last_risk_event(case: ActivationCase, moment: str | None = None) -> dict:
    events = [e for e in risk_events(case) if moment is None or e["moment"] == moment]
    assert events, f"no risk.evaluated event{f' at {moment}' if moment else ''}"
    return events[-1]


def fired_kinds(event: dict, part: str = "live") -> set[str]:
    return {item["kind"] for item in event[part]["fired"]}


def visible_text(html: str) -> str:
    """The page's words without tags, for plain-language checks."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- network list and GeoIP ------------------------------------------------------------------


@pytest.fixture
def network_list(settings, tmp_path) -> Callable[[str], Path]:
    """``network_list(text)`` writes a CIDR list file and points the setting at it."""

    def write(text: str) -> Path:
        path = tmp_path / f"ranges-{uuid.uuid4().hex[:8]}.txt"
        path.write_text(text, encoding="utf-8")
        settings.RISK_NETWORK_LIST_FILE = str(path)
        return path

    return write


@pytest.fixture
def vpn_list(network_list) -> Path:
    return network_list(f"# a commercial VPN provider\n{VPN_RANGE} vpn\n")


def build_mmdb(path: Path, database_type: str, networks: dict[str, dict]) -> Path:
    """A MaxMind-format database with ``networks`` (CIDR → record), IPv4 inside IPv6."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(
        ip_version=6, database_type=database_type, ipv4_compatible=True, int_type="u32"
    )
    for cidr, record in networks.items():
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def geoip(settings, tmp_path) -> Callable[..., None]:
    """``geoip(countries={cidr: "CN"}, asns={cidr: 64500})`` builds both databases and uses them."""

    def configure(*, countries: dict[str, str], asns: dict[str, int]) -> None:
        country_db = build_mmdb(
            tmp_path / "country.mmdb",
            "GeoLite2-Country",
            {cidr: {"country": {"iso_code": code}} for cidr, code in countries.items()},
        )
        asn_db = build_mmdb(
            tmp_path / "asn.mmdb",
            "GeoLite2-ASN",
            {
                cidr: {
                    "autonomous_system_number": number,
                    "autonomous_system_organization": f"AS{number}",
                }
                for cidr, number in asns.items()
            },
        )
        settings.RISK_GEOIP_COUNTRY_DB = str(country_db)
        settings.RISK_GEOIP_ASN_DB = str(asn_db)

    return configure
