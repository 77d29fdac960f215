"""Risk traffic benchmark: labelled honest and fraudulent customers through the real checkpoint.

    python -m bench.risk_traffic --seed 11 --customers 400

Creates a throwaway PostgreSQL database (``activation_rescue_risk_bench``), migrates it (the
default rule set v1 comes with the migrations) and plays, in this process, labelled customers
through the real sign-in, password-reset, profile and retry views with Django's test client:
the real middleware, views, services, checkpoint and rule set, each browser with its own
address (``REMOTE_ADDR``), headers, cookie jar and the facts the device script would post; SMS
codes are read from the locmem backend, authenticator codes computed from the customer's app.
The clock is set for every step (time_machine), so the velocity windows (one hour, 24 hours)
see a realistic day: customers first activate one line weeks earlier on their own device (that
is what makes a device known), then retry a second line during one day, interleaved with the
fraud patterns. Each attempt's decision is read afterwards from what was recorded (the
evaluations, the case's state and failure reason, the step-up events), never assumed.

Then, outside the simulated clock, it measures what the checkpoint adds to a code submit:
queries (CaptureQueriesContext) and this process's CPU (time.process_time) per submit, with
the checkpoint and with it stubbed out by the benchmark (``check``, ``attempt_decision`` and
``trust_device`` replaced by no-ops that allow), customers alternating between the two.

``--rules FILE`` runs a candidate rule set (JSON) as the shadow beside v1, or as the live set
with ``--rules-as live``; the report then has its figures too.
"""

import argparse
import base64
import contextlib
import datetime as dt
import heapq
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from unittest import mock

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "activation_rescue_risk_bench"
PG = "postgres://postgres@127.0.0.1:5432"
PASSWORD = "bench-password-123"  # noqa: S105
UTC = dt.UTC

# --- who comes by --------------------------------------------------------------------------------
# Shares within each class. Chosen to look like a day of activation retries for a consumer lender
# (most customers come back on the phone they used before; mobile data is behind carrier NAT);
# not tuned to the targets. The fraud class is oversampled (a fifth of the traffic instead of the
# 1-2 % of a real day) so that each pattern has enough attempts; the headline figures are shares
# within a class, so the oversampling does not move them, except that more fraud makes the shared
# networks (VPN exits) busier for honest customers, which is the conservative direction.
HONEST_MIX = {
    "returning_home": (0.33, "returning customer, known phone, home Wi-Fi"),
    "returning_mobile": (0.24, "returning customer, known phone, mobile data (carrier NAT /24s)"),
    "vpn_or_proxy": (0.07, "known device on a commercial VPN (listed) or a corporate proxy"),
    "address_change": (0.08, "code asked for on Wi-Fi, entered on mobile data"),
    "family_computer": (0.06, "shared family computer: 2-3 customers, one device, one address"),
    "old_phone": (0.05, "old Android/iOS phone, old browser, no JavaScript"),
    "cleared_cookies": (0.06, "known phone, cookies cleared (same attributes, new cookie)"),
    "first_time": (0.08, "first activation ever, no device history"),
    "new_phone": (0.03, "genuinely new phone (with an authenticator app if they have one)"),
}
FRAUD_MIX = {
    "fraud_ring": (
        0.45,
        "fraud ring: one phone, up to 20 new accounts a day, mostly on listed ranges",
    ),
    "sim_swap": (0.20, "SIM swap: number changed within 3 days, new device, no victim's app"),
    "takeover_after_reset": (0.15, "account takeover: password reset by SMS, then a new device"),
    "code_guessing": (0.20, "code guessing across accounts from one /24, no SMS access"),
}
# Beyond the issue's patterns: played in the same day, reported apart, not in the headline.
EXTRA_MIX = {
    "in_app_browser": ("honest", "known phone, but the link opened in WeChat's in-app browser"),
    "ring_clearing_cookies": ("fraud", "fraud ring that clears cookies between accounts"),
}
HONEST_WITH_APP = 0.20  # customers who set up the authenticator app (weeks before)
HONEST_TYPO = 0.05  # enter a wrong code first
HONEST_RESEND = 0.04  # ask for a second code ("it did not arrive") before entering one
HOURS = {7: 2, 8: 4, 9: 6, 10: 8, 11: 8, 12: 6, 13: 5, 14: 6, 15: 6, 16: 6}
HOURS |= {17: 5, 18: 5, 19: 7, 20: 8, 21: 8, 22: 6, 23: 3}
TARGETS = {"fraud_stopped": 0.90, "honest_stepped_up": 0.03, "honest_blocked": 0}


# --- devices -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """A kind of phone or computer with one browser, as the server sees it."""

    name: str
    ua: str  # {b}: browser major version, {o}: OS major version
    browser: int
    os: int
    weight: float
    facts: dict | None  # what static/js/device.js posts; None: no JavaScript
    hints: dict = field(default_factory=dict)  # Chromium's low-entropy client hints
    updates: str = "browser"  # what moves between visits: "browser", "os" (iOS, macOS), "none"

    def user_agent(self, browser: int, system: int) -> str:
        return self.ua.format(b=browser, o=system)


IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS {o}_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/{o}.5 Mobile/15E148 Safari/604.1"
)
ANDROID_HINTS = {"HTTP_SEC_CH_UA_PLATFORM": '"Android"', "HTTP_SEC_CH_UA_MOBILE": "?1"}
WINDOWS_HINTS = {"HTTP_SEC_CH_UA_PLATFORM": '"Windows"', "HTTP_SEC_CH_UA_MOBILE": "?0"}


def _facts(screen: str, dpr: str, platform: str, touch: str) -> dict:
    return {
        "screen": screen,
        "dpr": dpr,
        "tz": "Asia/Shanghai",
        "platform": platform,
        "touch": touch,
    }


def android(
    name: str,
    ua: str,
    browser: int,
    system: int,
    weight: float,
    models: list[tuple[str, str, str]],
    hints: dict | None = None,
) -> list[Profile]:
    """One browser on several phone models ``(model, screen, dpr)``, the weight shared out."""
    return [
        Profile(
            f"{name} ({model}, {screen})",
            ua.replace("{m}", model),
            browser,
            system,
            weight / len(models),
            _facts(screen, dpr, "Linux aarch64", "10"),
            hints or {},
        )
        for model, screen, dpr in models
    ]


# iPhones show no model: one screen class and iOS version looks the same on every phone of it.
PHONES = [
    Profile(
        "iPhone 13/14, Safari", IOS, 17, 17, 11, _facts("390x844", "3", "iPhone", "5"), {}, "os"
    ),
    Profile(
        "iPhone 15/16, Safari", IOS, 18, 18, 6, _facts("393x852", "3", "iPhone", "5"), {}, "os"
    ),
    Profile(
        "iPhone Pro Max, Safari", IOS, 18, 18, 5, _facts("430x932", "3", "iPhone", "5"), {}, "os"
    ),
    Profile("iPhone SE, Safari", IOS, 16, 16, 3, _facts("375x667", "2", "iPhone", "5"), {}, "os"),
    *android(
        "Huawei Browser",
        "Mozilla/5.0 (Linux; Android {o}; {m} Build/HUAWEI{m}; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/99.0.4844.88 Mobile Safari/537.36 "
        "HuaweiBrowser/{b}.0.5.302",
        14,
        12,
        7,
        [
            ("NOH-AN00", "360x780", "3"),
            ("ALN-AL00", "412x915", "3.5"),
            ("JAD-AL50", "360x792", "3"),
        ],
    ),
    *android(
        "MIUI Browser",
        "Mozilla/5.0 (Linux; U; Android {o}; zh-cn; {m} Build/TKQ1.220905.001) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.127 Mobile "
        "Safari/537.36 XiaoMi/MiuiBrowser/{b}.7.160802",
        17,
        13,
        7,
        [
            ("2211133C", "393x873", "2.75"),
            ("23049RAD8C", "393x851", "2.75"),
            ("M2012K11AC", "393x873", "2.75"),
        ],
    ),
    *android(
        "vivo Browser",
        "Mozilla/5.0 (Linux; Android {o}; {m} Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/87.0.4280.141 Mobile Safari/537.36 "
        "VivoBrowser/{b}.6.10.1",
        17,
        13,
        5,
        [("V2227A", "360x800", "3"), ("V2309A", "360x804", "3"), ("V2183A", "412x915", "2.625")],
    ),
    *android(
        "HeyTap Browser",
        "Mozilla/5.0 (Linux; U; Android {o}; zh-cn; {m} Build/SKQ1.210216.001) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/90.0.4430.61 Mobile "
        "Safari/537.36 HeyTapBrowser/{b}.8.37.1",
        40,
        12,
        5,
        [("PEEM00", "360x800", "3"), ("PHB110", "412x915", "3.5"), ("PGEM10", "360x780", "3")],
    ),
    *android(
        "QQ Browser",
        "Mozilla/5.0 (Linux; U; Android {o}; zh-CN; {m} Build/SP1A.210812.016) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/98.0.4758.102 "
        "MQQBrowser/{b}.6 Mobile Safari/537.36",
        14,
        12,
        4,
        [
            ("PGBM10", "393x851", "2.75"),
            ("V2162A", "360x800", "3"),
            ("22081212C", "393x873", "2.75"),
        ],
    ),
    # Chrome's reduced user agent names no model ("K"): only the screen tells these phones apart.
    *android(
        "Chrome (reduced user agent)",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{b}.0.0.0 Mobile Safari/537.36",
        131,
        10,
        5,
        [("K", "412x915", "2.625"), ("K", "384x854", "2.8125"), ("K", "360x800", "3")],
        ANDROID_HINTS,
    ),
    *android(
        "Samsung Internet",
        "Mozilla/5.0 (Linux; Android {o}; SAMSUNG {m}) AppleWebKit/537.36 (KHTML, like "
        "Gecko) SamsungBrowser/{b}.0 Chrome/121.0.0.0 Mobile Safari/537.36",
        25,
        14,
        2,
        [
            ("SM-S9110", "360x780", "3"),
            ("SM-S9180", "384x824", "3.75"),
            ("SM-A5360", "412x915", "2.625"),
        ],
        ANDROID_HINTS,
    ),
]
COMPUTERS = [
    Profile(
        "Windows PC, Chrome",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{b}.0.0.0 Safari/537.36",
        131,
        10,
        8,
        _facts("1920x1080", "1", "Win32", "0"),
        WINDOWS_HINTS,
    ),
    Profile(
        "Windows laptop, Edge",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{b}.0.0.0 Safari/537.36 Edg/{b}.0.0.0",
        131,
        10,
        4,
        _facts("1536x864", "1.25", "Win32", "0"),
        WINDOWS_HINTS,
    ),
    Profile(
        "Mac, Safari",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/{o}.5 Safari/605.1.15",
        17,
        17,
        3,
        _facts("1440x900", "2", "MacIntel", "0"),
        {},
        "os",
    ),
]
OLD_PHONES = [
    Profile(
        "Android 4.4 phone, stock browser",
        "Mozilla/5.0 (Linux; U; Android 4.4.2; zh-cn; HUAWEI G750-T01 Build/HuaweiG750-T01) "
        "AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
        4,
        4,
        3,
        None,
        {},
        "none",
    ),
    Profile(
        "iPhone 5s on iOS 9",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 9_3_5 like Mac OS X) AppleWebKit/601.1.46 (KHTML, "
        "like Gecko) Version/9.0 Mobile/13G36 Safari/601.1",
        9,
        9,
        2,
        None,
        {},
        "none",
    ),
    Profile(
        "Android 5 phone, UC Browser",
        "Mozilla/5.0 (Linux; U; Android 5.1; zh-CN; OPPO R9tm Build/LMY47I) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/40.0.2214.89 UCBrowser/11.5.0.939 Mobile "
        "Safari/537.36",
        11,
        5,
        2,
        None,
        {},
        "none",
    ),
]
WECHAT = (
    "Mozilla/5.0 (Linux; Android {o}; 22081212C Build/TKQ1.220829.002; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 "
    "MMWEBSDK/20231202 MMWEBID/2247 MicroMessenger/8.0.47.2560(0x28002F30) WeChat/arm64 Weixin "
    "NetType/WIFI Language/zh_CN ABI/arm64"
)
LANGUAGES = [("zh-CN,zh;q=0.9", 92), ("zh-CN,zh;q=0.9,en;q=0.8", 5), ("en-US,en;q=0.9", 3)]


# --- networks ------------------------------------------------------------------------------------
# Synthetic addresses; nothing is ever sent to them. The list file labels the VPN, proxy and
# hosting ranges as a commercial list would; carriers' and homes' ranges are not listed.
class Networks:
    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.carrier_nat = [f"{stem}.{rng.randint(0, 255)}" for stem in ("117.136", "112.96")]
        self.carrier_nat += [f"{stem}.{rng.randint(0, 255)}" for stem in ("106.38", "223.104")]
        self.carrier_nat += [f"{stem}.{rng.randint(0, 255)}" for stem in ("111.30", "120.229")]
        self.vpn = [f"146.70.{rng.randint(0, 255)}" for _ in range(3)]
        self.hosting = [f"45.76.{rng.randint(0, 255)}", f"47.242.{rng.randint(0, 255)}"]
        self.hosting += [f"43.154.{rng.randint(0, 255)}"]
        self.listed_proxy = [f"165.225.{rng.randint(0, 255)}"]  # a cloud security proxy
        self.corporate = [f"210.13.{rng.randint(0, 255)}" for _ in range(2)]  # not listed
        self.unlisted_servers = [f"103.{rng.randint(0, 255)}.{rng.randint(0, 255)}"]
        self._homes: set[str] = set()

    def list_file_text(self) -> str:
        lines = ["# generated by bench.risk_traffic"]
        lines += [f"{prefix}.0/24 vpn" for prefix in self.vpn]
        lines += [f"{prefix}.0/24 hosting" for prefix in self.hosting]
        lines += [f"{prefix}.0/24 proxy" for prefix in self.listed_proxy]
        return "\n".join(lines) + "\n"

    def host(self, prefix: str) -> str:
        return f"{prefix}.{self.rng.randint(2, 254)}"

    def home_prefix(self) -> str:
        """A household's own /24 on a broadband network (residential proxies look the same)."""
        while True:
            first = self.rng.choice([58, 59, 60, 61, 113, 114, 115, 116, 119, 121, 122, 124, 125])
            prefix = f"{first}.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}"
            if prefix not in self._homes:
                self._homes.add(prefix)
                return prefix

    def mobile(self) -> str:
        return self.host(self.rng.choice(self.carrier_nat))


# --- one browser -------------------------------------------------------------------------------
class Browser:
    """One browser on one phone or computer: its headers, address, cookie jar and script facts."""

    def __init__(
        self,
        profile: Profile,
        *,
        language: str,
        address: str,
        browser: int | None = None,
        system: int | None = None,
        user_agent: str = "",
    ) -> None:
        from django.test import Client

        self.profile = profile
        self.browser = profile.browser if browser is None else browser
        self.system = profile.os if system is None else system
        self.language = language
        self.user_agent = user_agent or profile.user_agent(self.browser, self.system)
        headers = {"HTTP_USER_AGENT": self.user_agent, "HTTP_ACCEPT_LANGUAGE": language}
        self.client = Client(REMOTE_ADDR=address, **headers, **profile.hints)
        self.facts = json.dumps(profile.facts) if profile.facts else None

    def same_device_new_cookies(self) -> "Browser":
        return Browser(
            self.profile,
            language=self.language,
            address=self.address,
            browser=self.browser,
            system=self.system,
            user_agent=self.user_agent,
        )

    @property
    def address(self) -> str:
        return self.client.defaults["REMOTE_ADDR"]

    def at(self, address: str) -> None:
        self.client.defaults["REMOTE_ADDR"] = address

    def post(self, url: str, data: dict):
        if self.facts is not None:
            data = {**data, "device_facts": self.facts}
        return self.client.post(url, data)

    def sign_out(self) -> None:
        self.client.cookies.pop("sessionid", None)


def older(profile: Profile, rng: Random, days_ago: float) -> tuple[int, int]:
    """The browser and OS versions a device had ``days_ago`` (browsers update every 4 weeks)."""
    browser, system = profile.browser, profile.os
    if profile.updates == "browser":
        browser -= min(int(days_ago // 28), rng.randint(0, 3))
    elif profile.updates == "os" and rng.random() < min(0.5, days_ago / 365):
        browser, system = browser - 1, system - 1
    return browser, system


# --- bookkeeping -------------------------------------------------------------------------------
@dataclass
class Attempt:
    """One customer's (or fraudster's) try at activating one line during the day."""

    persona: str
    label: str  # "honest" or "fraud"
    headline: bool
    user: object
    case_id: int = 0
    began: dt.datetime | None = None
    ended: dt.datetime | None = None
    sign_in_refused: bool = False
    notes: list[str] = field(default_factory=list)
    # Read from the database afterwards.
    decision: str = ""
    shadow_decision: str = ""
    state: str = ""
    failure_reason: str = ""
    failure_detail: str = ""
    step_ups: int = 0


class Sim:
    """The day's players and the helpers their steps use."""

    def __init__(self, rng: Random, day: dt.datetime, networks: Networks) -> None:
        from django.urls import reverse

        # Each flow draws from its own generator (seeded from ``master`` when it is built), so a
        # different decision in one flow, which changes what it draws next, leaves the others
        # alone: runs with two rule sets meet the same customers doing the same things.
        self.master = self.rng = rng
        self.day = day
        self.net = networks
        self.attempts: list[Attempt] = []
        self.history: list[tuple[object, int]] = []  # (user, case id) of the first activations
        self.urls = {
            "login": reverse("login"),
            "reset": reverse("password_reset"),
            "reset_confirm": reverse("password_reset_confirm"),
            "profile": reverse("profile"),
        }
        self._users = 0
        self._sms_seen = 0
        self._inbox: dict[str, list[str]] = {}

    # --- randomness -----------------------------------------------------------------------
    def add(self, flows: list, flow: "Flow") -> None:
        flows.append((flow, Random(self.master.getrandbits(64))))

    def use(self, rng: Random) -> None:
        self.rng = self.net.rng = rng

    def pick(self, profiles: list[Profile], exclude: Profile | None = None) -> Profile:
        choices = [p for p in profiles if p is not exclude]
        return self.rng.choices(choices, weights=[p.weight for p in choices])[0]

    def language(self) -> str:
        return self.rng.choices([x for x, _ in LANGUAGES], weights=[w for _, w in LANGUAGES])[0]

    def daytime(self, day: dt.datetime) -> dt.datetime:
        hour = self.rng.choices(list(HOURS), weights=list(HOURS.values()))[0]
        return day + dt.timedelta(hours=hour, seconds=self.rng.uniform(0, 3600))

    def after(self, low: float, high: float) -> dt.datetime:
        from django.utils import timezone

        return timezone.now() + dt.timedelta(seconds=self.rng.uniform(low, high))

    # --- accounts -------------------------------------------------------------------------
    def new_user(self, *, joined: dt.datetime, prefix: str = "139"):
        from accounts.models import User

        self._users += 1
        n = self._users
        return User.objects.create(
            username=f"risk{n}",
            password=self.password_hash,
            phone_number=f"+86{prefix}{n:08d}",
            customer_reference=f"R-{n:06d}",
            date_joined=joined,
        )

    @property
    def password_hash(self) -> str:
        if not hasattr(self, "_hash"):
            from django.contrib.auth.hashers import make_password

            self._hash = make_password(PASSWORD)
        return self._hash

    def open_case(self, user, reason: str = "code_expired") -> int:
        from activation.models import CreditLine
        from activation.services import open_case

        line = CreditLine.objects.create(
            customer=user,
            reference=f"RL-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}",
            product_name="Installment Plus",
            credit_limit=5000,
        )
        return open_case(credit_line=line, reason=reason).pk

    def give_app(self, user) -> None:
        from django_otp.plugins.otp_totp.models import TOTPDevice

        TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=True)

    @staticmethod
    def app_code(user, *, confirmed: bool = True) -> str:
        import pyotp
        from django_otp.plugins.otp_totp.models import TOTPDevice

        device = TOTPDevice.objects.filter(user=user, confirmed=confirmed).first()
        if device is None:
            return ""
        secret = base64.b32encode(device.bin_key).decode()
        return pyotp.TOTP(secret, digits=device.digits, interval=device.step).now()

    # --- SMS ------------------------------------------------------------------------------
    def inbox(self, phone: str) -> list[str]:
        """Codes texted to ``phone`` so far, oldest first."""
        from verification.sms import LocmemBackend

        outbox = LocmemBackend.outbox
        for message in outbox[self._sms_seen :]:
            found = re.search(r"\b(\d{6})\b", message["body"])
            if found:
                self._inbox.setdefault(message["to"], []).append(found.group(1))
        self._sms_seen = len(outbox)
        return self._inbox.get(phone, [])

    # --- reading the case -----------------------------------------------------------------
    @staticmethod
    def case(case_id: int):
        from activation.models import ActivationCase

        return ActivationCase.objects.only("state", "failure_reason").get(pk=case_id)

    @staticmethod
    def progress(case_id: int) -> tuple[str, int]:
        """The case's state and how many times it was asked for a stronger factor."""
        from django.db.models import Count, Q

        from activation.models import ActivationCase

        step_up = Q(events__kind="risk.step_up_required")
        return (
            ActivationCase.objects.filter(pk=case_id)
            .annotate(step_ups=Count("events", filter=step_up))
            .values_list("state", "step_ups")
            .get()
        )

    @staticmethod
    def retry_url(case_id: int) -> str:
        return f"/activation/{case_id}/retry/"

    # --- the customer's steps -------------------------------------------------------------
    def sign_in(self, browser: Browser, user, attempt: Attempt | None, password: str = PASSWORD):
        browser.sign_out()
        response = browser.post(
            self.urls["login"], {"username": user.username, "password": password}
        )
        if response.status_code != 302 and attempt is not None:
            attempt.sign_in_refused = True
        return response.status_code == 302

    def ask_for_code(self, browser: Browser, user, case_id: int, action: str = "send") -> str:
        """Ask for an SMS code; "sent", "held" (staff), "step_up" (app needed) or "nothing"."""
        phone = str(user.phone_number)
        sent, (_state, step_ups) = len(self.inbox(phone)), self.progress(case_id)
        browser.post(self.retry_url(case_id), {"action": action, "channel": "sms"})
        state, now_step_ups = self.progress(case_id)
        if state == "needs_review":
            return "held"
        if now_step_ups > step_ups:
            return "step_up"
        return "sent" if len(self.inbox(phone)) > sent else "nothing"

    def submit(self, browser: Browser, case_id: int, code: str) -> str:
        """Enter a code; "done" (to the core), "held", "step_up" or "wrong"."""
        _state, step_ups = self.progress(case_id)
        browser.post(
            self.retry_url(case_id),
            {"action": "verify", "code": code, "submission_id": str(uuid.uuid4())},
        )
        state, now_step_ups = self.progress(case_id)
        if state in ACTIVATED:
            return "done"
        if state == "needs_review":
            return "held"
        if now_step_ups > step_ups:
            return "step_up"
        return "wrong"

    def activate(
        self,
        browser: Browser,
        user,
        case_id: int,
        attempt: Attempt | None,
        *,
        app: Callable[[], str] | None = None,
        typo: bool = False,
        resend: bool = False,
        submit_from: str = "",
    ) -> Generator[dt.datetime, None, None]:
        """Sign in, ask for an SMS code, read it and enter it; answer a step-up with ``app``."""
        if not self.sign_in(browser, user, attempt):
            return
        yield self.after(15, 60)
        outcome = self.ask_for_code(browser, user, case_id)
        if outcome == "sent" and resend:
            yield self.after(65, 120)
            outcome = self.ask_for_code(browser, user, case_id, action="resend")
        if outcome == "sent":
            yield self.after(30, 150)
            if submit_from:
                browser.at(submit_from)
            code = self.inbox(str(user.phone_number))[-1]
            if typo:
                wrong = code[:-1] + str((int(code[-1]) + self.rng.randint(1, 9)) % 10)
                self.submit(browser, case_id, wrong)
                yield self.after(15, 40)
            outcome = self.submit(browser, case_id, code)
        if outcome == "step_up" and app is not None:
            yield self.after(40, 90)  # open the app; never the time step of an earlier code
            code = app()
            if code:
                outcome = self.submit(browser, case_id, code)
        if outcome == "nothing" and attempt is not None:
            attempt.notes.append("no code was sent")

    def begin(self, attempt: Attempt, case_id: int) -> None:
        from django.utils import timezone

        attempt.case_id = case_id
        attempt.began = timezone.now()
        self.attempts.append(attempt)

    def end(self, attempt: Attempt) -> None:
        from django.utils import timezone

        attempt.ended = timezone.now()


# --- the population's flows -------------------------------------------------------------------
Flow = Generator[dt.datetime, None, None]
Flows = list[tuple[Flow, Random]]  # each flow with its own random generator


def counts(total: int, mix: dict[str, tuple]) -> dict[str, int]:
    """``total`` split by the shares of ``mix`` (largest remainders), at least 1 each."""
    raw = {name: total * spec[0] for name, spec in mix.items()}
    result = {name: max(1, int(value)) for name, value in raw.items()}
    order = sorted(raw, key=lambda name: raw[name] - int(raw[name]), reverse=True)
    for name in order[: max(0, total - sum(result.values()))]:
        result[name] += 1
    return result


@dataclass
class Returning:
    """A customer with a first activation weeks ago on their own device."""

    user: object
    browser: Browser
    home: str  # their household's /24
    app: bool
    history_at: dt.datetime | None = None


def history_flow(sim: Sim, when: dt.datetime, customer: Returning, network: str) -> Flow:
    """The first activation, weeks before the day: it makes the device known."""
    yield when
    case_id = sim.open_case(customer.user)
    if customer.app:
        sim.give_app(customer.user)
    customer.browser.at(network)
    yield from sim.activate(customer.browser, customer.user, case_id, None)
    sim.history.append((customer.user, case_id))


def returning(sim: Sim, profiles: list[Profile], *, app: bool | None = None) -> Returning:
    joined = sim.day - dt.timedelta(days=sim.rng.uniform(100, 700))
    user = sim.new_user(joined=joined)
    profile = sim.pick(profiles)
    days_ago = sim.rng.uniform(7, 90)
    browser, system = older(profile, sim.rng, days_ago)
    home = sim.net.home_prefix()
    own = Browser(
        profile, language=sim.language(), address=sim.net.host(home), browser=browser, system=system
    )
    customer = Returning(
        user, own, home, sim.rng.random() < HONEST_WITH_APP if app is None else app
    )
    customer.history_at = sim.daytime(sim.day - dt.timedelta(days=int(days_ago)))
    return customer


def with_history(sim: Sim, customer: Returning, flows: Flows) -> None:
    network = sim.net.host(customer.home) if sim.rng.random() < 0.5 else sim.net.mobile()
    sim.add(flows, history_flow(sim, customer.history_at, customer, network))


def update(browser: Browser) -> None:
    """The day's version of a browser first seen weeks ago (updates installed meanwhile)."""
    fresh = Browser(
        browser.profile,
        language=browser.language,
        address=browser.address,
        browser=browser.profile.browser,
        system=browser.profile.os,
    )
    fresh.client.cookies = browser.client.cookies
    browser.client, browser.user_agent = fresh.client, fresh.user_agent


def honest_flow(
    sim: Sim,
    persona: str,
    customer: Returning | None,
    browser: Browser,
    user,
    *,
    at: dt.datetime,
    network: str,
    submit_from: str = "",
    app: bool = False,
    headline: bool = True,
) -> Flow:
    yield at
    if customer is not None and browser is customer.browser:
        update(browser)  # the same browser weeks later: updates installed meanwhile
    attempt = Attempt(persona, "honest", headline, user)
    sim.begin(attempt, sim.open_case(user, reason=sim.rng.choice(["code_expired", "core_busy"])))
    browser.at(network)
    yield sim.after(5, 30)
    yield from sim.activate(
        browser,
        user,
        attempt.case_id,
        attempt,
        app=(lambda: sim.app_code(user)) if app else None,
        typo=sim.rng.random() < HONEST_TYPO,
        resend=sim.rng.random() < HONEST_RESEND,
        submit_from=submit_from,
    )
    sim.end(attempt)


def build_honest(sim: Sim, persona: str, flows: Flows) -> int:
    """One honest customer (a household for the family computer); answers how many customers."""
    net, rng, day = sim.net, sim.rng, sim.day
    if persona == "family_computer":
        return build_household(sim, flows)
    if persona == "first_time":
        user = sim.new_user(joined=day - dt.timedelta(days=rng.uniform(0, 30)))
        browser = Browser(sim.pick(PHONES + COMPUTERS), language=sim.language(), address="")
        home = net.home_prefix()
        network = net.host(home) if rng.random() < 0.5 else net.mobile()
        sim.add(
            flows,
            honest_flow(sim, persona, None, browser, user, at=sim.daytime(day), network=network),
        )
        return 1
    profiles = OLD_PHONES if persona == "old_phone" else PHONES + COMPUTERS
    if persona in ("returning_mobile", "address_change", "cleared_cookies"):
        profiles = PHONES
    elif persona == "in_app_browser":
        profiles = [p for p in PHONES if "iPhone" not in p.name]
    customer = returning(sim, profiles)
    with_history(sim, customer, flows)
    browser, network, submit_from = customer.browser, net.host(customer.home), ""
    if persona == "returning_mobile":
        network = net.mobile()
    elif persona == "vpn_or_proxy":
        kind = rng.choices(["vpn", "listed_proxy", "corporate"], weights=[70, 15, 15])[0]
        network = net.host(rng.choice(getattr(net, kind)))
    elif persona == "address_change":
        submit_from = net.mobile()
    elif persona == "old_phone":
        network = net.host(customer.home) if rng.random() < 0.6 else net.mobile()
    elif persona == "cleared_cookies":
        browser = Browser(browser.profile, language=browser.language, address="")
        network = net.host(customer.home) if rng.random() < 0.5 else net.mobile()
    elif persona == "new_phone":
        profile = sim.pick(PHONES, exclude=customer.browser.profile)
        browser = Browser(profile, language=customer.browser.language, address="")
        network = net.host(customer.home) if rng.random() < 0.5 else net.mobile()
    elif persona == "in_app_browser":
        own = customer.browser.profile
        wechat = Profile("WeChat in-app browser", WECHAT, 8, own.os, 0, own.facts)
        browser = Browser(wechat, language=customer.browser.language, address="")
    sim.add(
        flows,
        honest_flow(
            sim,
            persona,
            customer,
            browser,
            customer.user,
            at=sim.daytime(day),
            network=network,
            submit_from=submit_from,
            app=customer.app,
            headline=persona in HONEST_MIX,
        ),
    )
    return 1


def build_household(sim: Sim, flows: Flows, size: int | None = None) -> int:
    """2-3 customers of one household on one computer and one address, each with a history."""
    rng = sim.rng
    size = size or (3 if rng.random() < 0.3 else 2)
    home = sim.net.home_prefix()
    address = sim.net.host(home)
    profile = sim.pick(COMPUTERS)
    first_days_ago = rng.uniform(20, 90)
    browser, system = older(profile, rng, first_days_ago)
    shared = Browser(
        profile, language=sim.language(), address=address, browser=browser, system=system
    )
    members = []
    for k in range(size):
        user = sim.new_user(joined=sim.day - dt.timedelta(days=rng.uniform(100, 700)))
        member = Returning(user, shared, home, rng.random() < HONEST_WITH_APP)
        day = sim.day - dt.timedelta(days=int(first_days_ago) - 4 * k)
        sim.add(flows, history_flow(sim, sim.daytime(day), member, address))
        members.append(member)

    def household_day() -> Flow:
        times = sorted(sim.daytime(sim.day) for _ in members)
        yield times[0]
        runs = [
            honest_flow(
                sim,
                "family_computer",
                None,
                shared,
                member.user,
                at=when,
                network=address,
                app=member.app,
            )
            for member, when in zip(members, times, strict=True)
        ]
        update(shared)  # the same computer today: its cookie jar carries over, updates installed
        # Each member's flow is played in turn (the family shares one screen).
        for run in runs:
            when = next(run)
            yield max(when, sim.after(0, 1))
            yield from run

    sim.add(flows, household_day())
    return size


def ring_flow(sim: Sim, persona: str, accounts: int, *, clears_cookies: bool) -> Flow:
    """One phone opening ``accounts`` new accounts' activations in one day."""
    rng, net = sim.rng, sim.net
    profile = sim.pick([p for p in PHONES if "iPhone" not in p.name])
    listed = rng.choice(net.hosting + net.vpn) if rng.random() < 0.7 else ""

    def network() -> str:
        # A listed hosting or VPN range, or a rotating residential proxy (a new /24 each time).
        return net.host(listed or net.home_prefix())

    phone = Browser(profile, language="zh-CN,zh;q=0.9", address=network())
    users = [
        sim.new_user(joined=sim.day - dt.timedelta(hours=rng.uniform(2, 72)), prefix="137")
        for _ in range(accounts)
    ]
    when = sim.day + dt.timedelta(hours=rng.uniform(7, 13))
    for user in users:
        yield when
        attempt = Attempt(persona, "fraud", persona in FRAUD_MIX, user)
        sim.begin(attempt, sim.open_case(user, reason="code_expired"))
        if clears_cookies:
            phone = phone.same_device_new_cookies()
        phone.at(network())
        yield from sim.activate(phone, user, attempt.case_id, attempt)
        sim.end(attempt)
        when = sim.after(20 * 60, 50 * 60)


def enrol_own_app(sim: Sim, browser: Browser, user) -> Flow:
    """Set up an authenticator app on the account with an SMS code the fraudster receives."""
    profile = sim.urls["profile"]
    browser.post(profile, {"action": "send_code"})
    yield sim.after(20, 40)
    proof = sim.inbox(str(user.phone_number))[-1]
    browser.post(profile, {"action": "start_app"})
    yield sim.after(40, 80)
    code = sim.app_code(user, confirmed=False)
    browser.post(
        profile,
        {"action": "confirm_app", "code": code, "proof_channel": "sms", "proof_code": proof},
    )


def reset_password(sim: Sim, browser: Browser, user) -> Generator[dt.datetime, None, str]:
    """The password-reset-by-SMS flow; the worker's job is run in place. Answers the password."""
    from accounts.services import send_password_reset_code

    phone = str(user.phone_number)
    browser.post(sim.urls["reset"], {"phone_number": phone})
    send_password_reset_code(phone_number=phone)  # what the worker does with the queued task
    yield sim.after(20, 60)
    password = f"Taken-{uuid.UUID(int=sim.rng.getrandbits(128)).hex[:12]}"
    code = sim.inbox(phone)[-1]
    browser.post(
        sim.urls["reset_confirm"],
        {"code": code, "new_password1": password, "new_password2": password},
    )
    return password


def attacker_browser(sim: Sim) -> Browser:
    rng, net = sim.rng, sim.net
    kind = rng.choices(["mobile", "home", "vpn", "hosting"], weights=[45, 25, 20, 10])[0]
    if kind == "mobile":
        address = net.mobile()
    elif kind == "home":
        address = net.host(net.home_prefix())
    else:
        address = net.host(rng.choice(getattr(net, kind)))
    # Drawn from the same phones as the customers': sometimes the very model the victim has.
    return Browser(sim.pick(PHONES), language="zh-CN,zh;q=0.9", address=address)


def takeover_flow(sim: Sim, persona: str, victim: Returning) -> Flow:
    """A SIM swap (the number moved to the fraudster's SIM days ago) or a takeover after a reset."""
    rng = sim.rng
    when = sim.daytime(sim.day)
    if persona == "sim_swap":
        yield when - dt.timedelta(hours=rng.uniform(6, 72))
        from accounts.models import User

        victim.user = User.objects.get(pk=victim.user.pk)
        victim.user.phone_number = f"+86136{victim.user.pk:08d}"  # now the fraudster's SIM
        victim.user.save()  # stamps phone_number_changed_at
    yield when
    attempt = Attempt(persona, "fraud", True, victim.user)
    sim.begin(attempt, sim.open_case(victim.user, reason="core_unavailable"))
    browser = attacker_browser(sim)
    password = PASSWORD
    if persona == "takeover_after_reset" or rng.random() < 0.6:
        password = yield from reset_password(sim, browser, victim.user)
        yield sim.after(30, 120)
    if not sim.sign_in(browser, victim.user, attempt, password):
        sim.end(attempt)
        return
    own_app = rng.random() < 0.5
    if own_app:
        yield sim.after(20, 60)
        yield from enrol_own_app(sim, browser, victim.user)
    yield sim.after(20, 60)
    outcome = sim.ask_for_code(browser, victim.user, attempt.case_id)
    if outcome == "sent":
        yield sim.after(20, 60)
        outcome = sim.submit(browser, attempt.case_id, sim.inbox(str(victim.user.phone_number))[-1])
    if outcome == "step_up" and own_app:
        yield sim.after(40, 90)
        sim.submit(browser, attempt.case_id, sim.app_code(victim.user))
    sim.end(attempt)


def guessing_flow(sim: Sim, victims: list[Returning | object], prefix: str) -> Flow:
    """Known passwords, no SMS: sign in to one account after another and guess its code."""
    rng = sim.rng
    profile = sim.pick(COMPUTERS)
    when = sim.day + dt.timedelta(hours=rng.uniform(1, 22))
    for victim in victims:
        user = victim.user if isinstance(victim, Returning) else victim
        yield when
        attempt = Attempt("code_guessing", "fraud", True, user)
        sim.begin(attempt, sim.open_case(user, reason="code_expired"))
        # A script with a fresh cookie jar per account, from addresses in one /24.
        browser = Browser(profile, language="zh-CN,zh;q=0.9", address=sim.net.host(prefix))
        if sim.sign_in(browser, user, attempt):
            yield sim.after(2, 6)
            if sim.ask_for_code(browser, user, attempt.case_id) == "sent":
                for _guess in range(5):
                    yield sim.after(10, 20)  # past django-otp's growing delay between tries
                    guess = f"{rng.randrange(10**6):06d}"
                    if sim.submit(browser, attempt.case_id, guess) != "wrong":
                        break
        sim.end(attempt)
        when = sim.after(60, 180)


def build_fraud(sim: Sim, persona: str, count: int, flows: Flows) -> None:
    rng = sim.rng
    if persona in ("fraud_ring", "ring_clearing_cookies"):
        devices = max(1, -(-count // 20))
        for d in range(devices):
            accounts = count // devices + (1 if d < count % devices else 0)
            sim.add(
                flows,
                ring_flow(
                    sim, persona, accounts, clears_cookies=persona == "ring_clearing_cookies"
                ),
            )
        return
    if persona == "code_guessing":
        # Accounts whose passwords leaked elsewhere: mostly customers with a history, some not.
        victims: list = []
        for _ in range(count):
            if rng.random() < 0.7:
                victim = returning(sim, PHONES + COMPUTERS)
                with_history(sim, victim, flows)
                victims.append(victim)
            else:
                victims.append(sim.new_user(joined=sim.day - dt.timedelta(days=rng.uniform(1, 60))))
        # At least two attacks: one from a listed hosting range, one from an unlisted /24.
        attacks = min(count, max(2, -(-count // 20)))
        networks = [rng.choice(sim.net.hosting), *sim.net.unlisted_servers]
        for a in range(attacks):
            sim.add(flows, guessing_flow(sim, victims[a::attacks], networks[a % len(networks)]))
        return
    for _ in range(count):
        victim = returning(sim, PHONES + COMPUTERS)
        with_history(sim, victim, flows)
        sim.add(flows, takeover_flow(sim, persona, victim))


# --- playing the clock ---------------------------------------------------------------------------
def play(sim: Sim, flows: Iterable[tuple[Flow, Random]]) -> int:
    """Run every flow's steps in time order, the clock set to each step's time. Answers steps."""
    import time_machine

    heap: list[tuple[dt.datetime, int, Flow, Random]] = []
    for seq, (flow, rng) in enumerate(flows):
        sim.use(rng)
        with contextlib.suppress(StopIteration):  # a flow with nothing to do
            heapq.heappush(heap, (next(flow), seq, flow, rng))
    steps = 0
    with time_machine.travel(heap[0][0], tick=False) as clock:
        while heap:
            when, seq, flow, rng = heapq.heappop(heap)
            clock.move_to(when)
            sim.use(rng)
            steps += 1
            with contextlib.suppress(StopIteration):
                heapq.heappush(heap, (next(flow), seq, flow, rng))
    sim.use(sim.master)
    return steps


# --- the rule sets -------------------------------------------------------------------------------
def load_rule_set(path: Path, status: str) -> dict:
    """Validate a candidate rule set from JSON and install it as the shadow or the live set."""
    from django.core.exceptions import ValidationError
    from django.utils import timezone

    from risk.models import Rule, RuleSetVersion
    from risk.rules import clean_params, validate_rule_set

    spec = json.loads(path.read_text())
    try:
        rules = [
            (r["kind"], clean_params(r["kind"], r.get("params", {})), r["score"])
            for r in spec["rules"]
        ]
        validate_rule_set(rules, step_up_at=spec["step_up_at"], review_at=spec["review_at"])
    except (KeyError, TypeError, ValidationError) as error:
        raise SystemExit(f"{path}: not a valid rule set: {error}") from error
    if status == "live":
        RuleSetVersion.objects.filter(status="live").update(status="retired")
    version = RuleSetVersion.objects.create(
        number=RuleSetVersion.objects.count() + 1,
        status=status,
        step_up_at=spec["step_up_at"],
        review_at=spec["review_at"],
        note=spec.get("note", f"candidate from {path.name}"),
        published_at=timezone.now(),
    )
    Rule.objects.bulk_create(
        Rule(version=version, kind=kind, params=params, score=score)
        for kind, params, score in rules
    )
    return {"version": version.number, "status": status, "file": str(path), **spec}


def live_rule_set() -> dict:
    from risk.models import RuleSetVersion

    version = RuleSetVersion.objects.get(status="live")
    return {
        "version": version.number,
        "step_up_at": version.step_up_at,
        "review_at": version.review_at,
        "rules": [
            {"kind": r.kind, "params": r.params, "score": r.score}
            for r in version.rules.filter(enabled=True).order_by("pk")
        ],
    }


# --- reading the outcomes ------------------------------------------------------------------------
def read_outcomes(sim: Sim) -> None:
    """Each attempt's strongest live (and shadow) decision and its case's end, from the database."""
    from activation.models import ActivationCase, CaseEvent
    from risk.models import Evaluation, strongest

    case_ids = [a.case_id for a in sim.attempts]
    decisions: dict[int, list[str]] = {}
    shadows: dict[int, list[str]] = {}
    for case_id, decision, shadow in Evaluation.objects.filter(case_id__in=case_ids).values_list(
        "case_id", "decision", "shadow_decision"
    ):
        decisions.setdefault(case_id, []).append(decision)
        if shadow:
            shadows.setdefault(case_id, []).append(shadow)
    sign_ins: dict[int, list[tuple[dt.datetime, str, str]]] = {}
    for customer_id, created_at, decision, shadow in Evaluation.objects.filter(
        moment="sign_in", customer_id__in=[a.user.pk for a in sim.attempts], created_at__gte=sim.day
    ).values_list("customer_id", "created_at", "decision", "shadow_decision"):
        sign_ins.setdefault(customer_id, []).append((created_at, decision, shadow))
    cases = {
        c.pk: c
        for c in ActivationCase.objects.filter(pk__in=case_ids).only(
            "state", "failure_reason", "failure_detail"
        )
    }
    step_ups = Counter(
        CaseEvent.objects.filter(case_id__in=case_ids, kind="risk.step_up_required").values_list(
            "case_id", flat=True
        )
    )
    for attempt in sim.attempts:
        # A sign-in decides nothing but a block; what counts is the code request and submit.
        blocked = any(
            decision == "block"
            for at, decision, _shadow in sign_ins.get(attempt.user.pk, [])
            if attempt.began <= at <= attempt.ended
        )
        extra = ["block"] if blocked or attempt.sign_in_refused else []
        attempt.decision = strongest(*decisions.get(attempt.case_id, []), *extra)
        attempt.shadow_decision = strongest(*shadows.get(attempt.case_id, []), *extra)
        case = cases[attempt.case_id]
        attempt.state, attempt.failure_reason = case.state, case.failure_reason
        attempt.failure_detail = case.failure_detail
        attempt.step_ups = step_ups.get(attempt.case_id, 0)


ACTIVATED = ("submitting", "awaiting_confirmation", "activated")


def to_staff(a: Attempt) -> bool:
    return a.state == "needs_review" and a.failure_reason == "risk_review"


def inconsistencies(attempts: list[Attempt]) -> list[str]:
    """Where the recorded decision and the case's end disagree (a bench or product bug)."""
    found = []
    for a in attempts:
        if a.decision == "allow" and to_staff(a):
            found.append(f"{a.persona} case {a.case_id}: allowed but handed to staff")
        if a.decision == "review" and not to_staff(a):
            found.append(f"{a.persona} case {a.case_id}: reviewed but {a.state}")
        if a.decision == "step_up" and a.state in ACTIVATED and a.step_ups == 0:
            found.append(f"{a.persona} case {a.case_id}: stepped up but activated without it")
        if a.label == "honest" and a.decision == "allow" and a.state not in ACTIVATED:
            found.append(
                f"{a.persona} case {a.case_id}: honest, allowed, ended {a.state} {a.notes}"
            )
    return found


def tally(attempts: list[Attempt], decision: Callable[[Attempt], str]) -> dict:
    row = Counter(decision(a) for a in attempts)
    return {
        "count": len(attempts),
        "allowed": row["allow"],
        "stepped_up": row["step_up"],
        "stepped_up_passed_with_app": sum(
            1 for a in attempts if decision(a) == "step_up" and a.state in ACTIVATED
        ),
        "stepped_up_to_staff": sum(1 for a in attempts if decision(a) == "step_up" and to_staff(a)),
        "reviewed": row["review"],
        "blocked": row["block"],
        "activated": sum(1 for a in attempts if a.state in ACTIVATED),
    }


def figures(attempts: list[Attempt], decision: Callable[[Attempt], str]) -> dict:
    honest = [a for a in attempts if a.label == "honest" and a.headline]
    fraud = [a for a in attempts if a.label == "fraud" and a.headline]
    h, f = tally(honest, decision), tally(fraud, decision)
    share = lambda n, d: round(n / d, 4) if d else 0.0  # noqa: E731
    personas = {}
    for persona in [*HONEST_MIX, *FRAUD_MIX, *EXTRA_MIX]:
        chosen = [a for a in attempts if a.persona == persona]
        if chosen:
            personas[persona] = tally(chosen, decision)
    return {
        "fraud_attempts": f["count"],
        "fraud_stopped": f["stepped_up"] + f["reviewed"] + f["blocked"],
        "fraud_stopped_share": share(f["stepped_up"] + f["reviewed"] + f["blocked"], f["count"]),
        "fraud_activated": f["activated"],
        "honest_customers": h["count"],
        "honest_stepped_up": h["stepped_up"],
        "honest_stepped_up_share": share(h["stepped_up"], h["count"]),
        "honest_stepped_up_to_staff": h["stepped_up_to_staff"],
        "honest_reviewed": h["reviewed"],
        "honest_reviewed_share": share(h["reviewed"], h["count"]),
        "honest_blocked": h["blocked"],
        "honest_activated": h["activated"],
        "personas": personas,
    }


def missed(sim: Sim) -> list[dict]:
    """Why each headline fraud attempt that was allowed got through: what the checkpoint saw."""
    from risk.models import Evaluation

    found = []
    for a in sim.attempts:
        if a.label != "fraud" or not a.headline or a.decision != "allow":
            continue
        seen = (
            Evaluation.objects.filter(case_id=a.case_id)
            .order_by("-score", "-created_at")
            .values("moment", "score", "signals")
            .first()
        ) or {}
        signals = seen.get("signals", {})
        found.append(
            {
                "persona": a.persona,
                "case": a.case_id,
                "activated": a.state in ACTIVATED,
                "score": seen.get("score"),
                "device_recognised": signals.get("device_recognised"),
                "listed": signals.get("network", {}).get("listed"),
                "velocity": signals.get("velocity"),
            }
        )
    return found


def fired_rules(sim: Sim) -> dict:
    """How often each live rule fired at a code request or submit, per class of attempt."""
    from risk.models import FiredRule

    label = {a.case_id: a.label for a in sim.attempts if a.headline}
    result: dict[str, Counter] = {}
    rows = FiredRule.objects.filter(evaluation__case_id__in=list(label), shadow=False).values_list(
        "evaluation__case_id", "rule__kind", "rule__params"
    )
    seen = set()
    for case_id, kind, params in rows:
        name = f"{kind} {json.dumps(params, sort_keys=True)}" if params else kind
        if (case_id, name) in seen:
            continue
        seen.add((case_id, name))
        result.setdefault(name, Counter())[label[case_id]] += 1
    return {name: dict(counter) for name, counter in sorted(result.items())}


# --- cost per submit ------------------------------------------------------------------------------
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    queries: int
    cpu_ms: float
    wall_ms: float
    request_queries: int
    postgres_cpu_ms: float | None = None
    check_queries: int = 0
    check_cpu_ms: float = 0.0


def backend_cpu() -> tuple[int, float]:
    """The PostgreSQL backend serving this process's connection: its pid and CPU seconds so far."""
    from django.db import connection

    pid = connection.connection.info.backend_pid
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return pid, float("nan")
    return pid, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure_cost(sim: Sim, customers: list[Returning]) -> dict:
    """Code submits with and without the checkpoint, customers alternating, in real time.

    "Without" replaces, in this process only, what the submit asks of the checkpoint
    (``check``, ``attempt_decision`` and ``trust_device``) with no-ops that allow; the code
    request before it is stubbed the same way, so no evaluation is left behind for the submit.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from activation.services import checkpoint as activation_checkpoint
    from activation.services import retry
    from risk.models import Decision
    from risk.services import Assessment

    allow = activation_checkpoint.Checked(
        Assessment(evaluation_id=0, decision=Decision.ALLOW, live=None, device_trusted=True),
        Decision.ALLOW,
    )
    real_check = activation_checkpoint.check
    inside: dict[str, float] = {"queries": 0, "cpu": 0.0}

    def counted_check(*args, **kwargs):
        began, cpu = len(connection.queries_log), time.process_time()
        try:
            return real_check(*args, **kwargs)
        finally:
            inside["queries"] += len(connection.queries_log) - began
            inside["cpu"] += time.process_time() - cpu

    samples: dict[str, list[Sample]] = {"with": [], "without": []}
    statements: dict[str, list[str]] = {}
    for index, customer in enumerate(customers):
        arm = "with" if index % 2 == 0 else "without"
        stack = contextlib.ExitStack()
        if arm == "without":
            for name, stub in (
                ("check", lambda *args, **kwargs: allow),
                ("attempt_decision", lambda case: Decision.ALLOW),
            ):
                stack.enter_context(mock.patch.object(activation_checkpoint, name, stub))
            stack.enter_context(mock.patch.object(retry, "trust_device", lambda **kwargs: None))
        else:
            stack.enter_context(mock.patch.object(activation_checkpoint, "check", counted_check))
        with stack:
            user, browser = customer.user, customer.browser
            update(browser)
            browser.at(sim.net.host(customer.home))
            case_id = sim.open_case(user)
            sim.sign_in(browser, user, None)
            texted = len(sim.inbox(str(user.phone_number)))
            with CaptureQueriesContext(connection) as request_queries:
                browser.post(sim.retry_url(case_id), {"action": "send", "channel": "sms"})
            if len(sim.inbox(str(user.phone_number))) == texted:
                raise SystemExit(f"cost phase: {user.username} got no code")
            code = sim.inbox(str(user.phone_number))[-1]
            form = {"action": "verify", "code": code, "submission_id": str(uuid.uuid4())}
            inside.update(queries=0, cpu=0.0)
            with CaptureQueriesContext(connection) as queries:
                pid, postgres = backend_cpu()
                cpu, wall = time.process_time(), time.perf_counter()
                response = browser.post(sim.retry_url(case_id), form)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                pid_after, postgres_after = backend_cpu()
            if response.status_code != 302 or sim.case(case_id).state not in ACTIVATED:
                raise SystemExit(f"cost phase: {user.username}'s submit did not go through")
        statements.setdefault(arm, [q["sql"][:140] for q in queries.captured_queries])
        samples[arm].append(
            Sample(
                queries=len(queries.captured_queries),
                cpu_ms=cpu * 1000,
                wall_ms=wall * 1000,
                request_queries=len(request_queries.captured_queries),
                postgres_cpu_ms=(postgres_after - postgres) * 1000 if pid == pid_after else None,
                check_queries=int(inside["queries"]),
                check_cpu_ms=inside["cpu"] * 1000,
            )
        )

    def summary(arm: str) -> dict:
        rows = samples[arm]
        # Left out: a submit during which the connection was replaced, or /proc unreadable.
        postgres = [s.postgres_cpu_ms for s in rows if s.postgres_cpu_ms is not None]
        postgres = [value for value in postgres if value == value]  # NaN is not equal to itself
        return {
            "submits": len(rows),
            "queries_per_submit": statistics.mean(s.queries for s in rows),
            "queries_per_code_request": statistics.mean(s.request_queries for s in rows),
            "cpu_ms_mean": round(statistics.mean(s.cpu_ms for s in rows), 2),
            "cpu_ms_median": round(statistics.median(s.cpu_ms for s in rows), 2),
            "postgres_cpu_ms_mean": round(statistics.mean(postgres), 2) if postgres else None,
            "wall_ms_median": round(statistics.median(s.wall_ms for s in rows), 2),
            "check_queries": statistics.mean(s.check_queries for s in rows),
            "check_cpu_ms_mean": round(statistics.mean(s.check_cpu_ms for s in rows), 2),
        }

    with_, without = summary("with"), summary("without")
    total = [
        round(arm["cpu_ms_mean"] + arm["postgres_cpu_ms_mean"], 2)
        if arm["postgres_cpu_ms_mean"] is not None
        else None
        for arm in (with_, without)
    ]
    return {
        "with": with_,
        "without": without,
        "added_queries_per_submit": with_["queries_per_submit"] - without["queries_per_submit"],
        "cpu_ratio_mean": round(with_["cpu_ms_mean"] / without["cpu_ms_mean"], 3),
        "cpu_ratio_median": round(with_["cpu_ms_median"] / without["cpu_ms_median"], 3),
        "cpu_with_postgres_ms_mean": total,
        "cpu_with_postgres_ratio": round(total[0] / total[1], 3) if None not in total else None,
        "wall_ratio_median": round(with_["wall_ms_median"] / without["wall_ms_median"], 3),
        "one_submit_sql": statements,
    }


# --- the report ----------------------------------------------------------------------------------
LABELS = {**{k: v[1] for k, v in HONEST_MIX.items()}, **{k: v[1] for k, v in FRAUD_MIX.items()}}
LABELS |= {k: v[1] for k, v in EXTRA_MIX.items()}


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def markdown(result: dict) -> str:
    live, cost = result["live"], result["cost"]
    lines = [
        f"**Command:** `{result['command']}` — {result['date']}, {result['cores']} cores, "
        f"{result['seconds']:.0f} s in all.",
        "",
        f"Population: {live['honest_customers']} honest customers and {live['fraud_attempts']} "
        "fraud attempts in the headline"
        + (", plus the extra personas below." if result["population"]["extras"] else "."),
        "",
        "| figure | result | target |",
        "|---|---|---|",
        "| fraud attempts stopped (step-up, review or block) | "
        f"**{pct(live['fraud_stopped_share'])}** "
        f"({live['fraud_stopped']} of {live['fraud_attempts']}) | ≥ 90 % "
        f"{'✓' if live['fraud_stopped_share'] >= TARGETS['fraud_stopped'] else '✗'} |",
        f"| honest customers stepped up | **{pct(live['honest_stepped_up_share'])}** "
        f"({live['honest_stepped_up']} of {live['honest_customers']}; "
        f"{live['honest_stepped_up_to_staff']} of them without an app, so to staff) | ≤ 3 % "
        f"{'✓' if live['honest_stepped_up_share'] <= TARGETS['honest_stepped_up'] else '✗'} |",
        f"| honest customers blocked | **{live['honest_blocked']}** | 0 "
        f"{'✓' if live['honest_blocked'] == 0 else '✗'} |",
        f"| honest customers reviewed | {pct(live['honest_reviewed_share'])} "
        f"({live['honest_reviewed']}) | — |",
        f"| fraud attempts that got the line activated | {live['fraud_activated']} | — |",
        "",
        "| persona | share of class | count | allowed | stepped up (passed with app / to staff) "
        "| reviewed | blocked | activated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for persona, row in live["personas"].items():
        klass = "honest" if persona in HONEST_MIX else "fraud" if persona in FRAUD_MIX else "extra"
        total = live["honest_customers"] if klass == "honest" else live["fraud_attempts"]
        share = pct(row["count"] / total) if klass != "extra" else "not in headline"
        lines.append(
            f"| {klass}: {LABELS[persona]} | {share} | {row['count']} | {row['allowed']} | "
            f"{row['stepped_up']} ({row['stepped_up_passed_with_app']} / "
            f"{row['stepped_up_to_staff']}) | {row['reviewed']} | {row['blocked']} | "
            f"{row['activated']} |"
        )
    if result.get("candidate"):
        cand, rules = result["candidate"], result["candidate_rules"]
        lines += [
            "",
            f"Candidate rule set v{rules['version']} ({rules['status']}, `{rules['file']}`): "
            f"fraud stopped {pct(cand['fraud_stopped_share'])}, honest stepped up "
            f"{pct(cand['honest_stepped_up_share'])}, honest reviewed "
            f"{pct(cand['honest_reviewed_share'])}, honest blocked {cand['honest_blocked']}.",
        ]
    w, wo = cost["with"], cost["without"]
    lines += [
        "",
        "| per code submit (in-process request) | with the checkpoint | without | ratio |",
        "|---|---|---|---|",
        f"| queries | {w['queries_per_submit']:.1f} | {wo['queries_per_submit']:.1f} | "
        f"+{cost['added_queries_per_submit']:.1f} |",
        f"| of which in `check()` (evaluate + timeline event + risk level) | "
        f"{w['check_queries']:.1f} | — | — |",
        f"| CPU of this process, mean / median | {w['cpu_ms_mean']} / {w['cpu_ms_median']} ms | "
        f"{wo['cpu_ms_mean']} / {wo['cpu_ms_median']} ms | {cost['cpu_ratio_mean']} / "
        f"{cost['cpu_ratio_median']} |",
        f"| of which in `check()`, mean | {w['check_cpu_ms_mean']} ms | — | — |",
        f"| CPU of this process + its PostgreSQL backend, mean | "
        f"{cost['cpu_with_postgres_ms_mean'][0]} ms | {cost['cpu_with_postgres_ms_mean'][1]} ms | "
        f"{cost['cpu_with_postgres_ratio']} |",
        f"| wall time, median | {w['wall_ms_median']} ms | {wo['wall_ms_median']} ms | "
        f"{cost['wall_ratio_median']} |",
        f"| queries per code request | {w['queries_per_code_request']:.1f} | "
        f"{wo['queries_per_code_request']:.1f} | — |",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------
def configure(workdir: Path, list_file: Path) -> None:
    for name in [name for name in os.environ if name.startswith(("DJANGO_", "TEST_"))]:
        del os.environ[name]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_ENV="development",
        DEBUG="false",
        ALLOWED_HOSTS="testserver",
        DATABASE_URL=f"{PG}/{DB_NAME}",
        CACHE_URL="locmemcache://risk-bench",
        CELERY_BROKER_URL="memory://",
        SMS_BACKEND="verification.sms.LocmemBackend",
        PORTAL_VAR_DIR=str(workdir),
        RISK_NETWORK_LIST_FILE=str(list_file),
        LOG_LEVEL="ERROR",
    )
    sys.path.insert(0, str(ROOT))
    # Static files are served from the source folders; nothing is collected for this run.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    import django

    django.setup()
    from django.test.utils import override_settings

    # Sign-in is not what is measured: a fast hasher, as in the test suite.
    override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]).enable()


def create_database() -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    durable_commits(False)


def durable_commits(on: bool) -> None:
    """Whether a commit waits for the disk: not while the day is played (a throwaway database;
    it changes no query and no CPU figure, only the wait), as in production while cost is measured.
    """
    from django.db import connections

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {DB_NAME} SET synchronous_commit TO {'on' if on else 'off'}")
    if "django" in sys.modules and connections.settings:
        connections.close_all()  # new sessions take the database's setting


def drop_database() -> None:
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def run(options: argparse.Namespace, rng: Random, networks: Networks, began: float) -> dict:
    """Migrate, play the population's history and day, read the outcomes, measure the cost."""
    from django.core.management import call_command
    from django.utils import timezone

    print(f"migrating {DB_NAME} …", flush=True)
    call_command("migrate", verbosity=0)
    print(f"migrated after {time.perf_counter() - began:.0f} s", flush=True)
    candidate_rules = load_rule_set(options.rules, options.rules_as) if options.rules else None
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    sim = Sim(rng, today - dt.timedelta(days=2), networks)

    fraud_total = round(options.customers * options.fraud_share)
    honest_total = options.customers - fraud_total
    flows: Flows = []
    made = Counter()
    for persona, wanted in counts(honest_total, HONEST_MIX).items():
        while made[persona] < wanted:
            if persona == "family_computer":
                left = wanted - made[persona]
                made[persona] += build_household(sim, flows, size=left if left in (2, 3) else None)
            else:
                made[persona] += build_honest(sim, persona, flows)
    for persona, wanted in counts(fraud_total, FRAUD_MIX).items():
        build_fraud(sim, persona, wanted, flows)
    if not options.no_extras:
        for _ in range(max(1, round(0.02 * honest_total))):
            build_honest(sim, "in_app_browser", flows)
        build_fraud(sim, "ring_clearing_cookies", 20, flows)
    cost_customers = [returning(sim, PHONES + COMPUTERS) for _ in range(options.cost_submits)]
    for customer in cost_customers:
        with_history(sim, customer, flows)

    print(f"playing {len(flows)} flows (history weeks back, then the day) …", flush=True)
    steps = play(sim, flows)
    played = time.perf_counter() - began
    read_outcomes(sim)
    live = figures(sim.attempts, lambda a: a.decision)
    problems = inconsistencies(sim.attempts)
    from activation.models import ActivationCase

    history_ok = ActivationCase.objects.filter(
        pk__in=[case_id for _user, case_id in sim.history], state__in=ACTIVATED
    ).count()

    print(f"measuring the cost per submit ({options.cost_submits} submits) …", flush=True)
    durable_commits(True)
    cost = measure_cost(sim, cost_customers)

    command = "python -m bench.risk_traffic " + " ".join(sys.argv[1:])
    result = {
        "command": command.strip(),
        "date": dt.date.today().isoformat(),
        "cores": os.cpu_count(),
        "seed": options.seed,
        "seconds": time.perf_counter() - began,
        "seconds_playing": round(played, 1),
        "steps": steps,
        "history_first_activations": {"played": len(sim.history), "activated": history_ok},
        "population": {
            "honest": {p: made[p] for p in HONEST_MIX},
            "fraud": counts(fraud_total, FRAUD_MIX),
            "extras": Counter(a.persona for a in sim.attempts if not a.headline),
        },
        "live_rules": live_rule_set(),
        "live": live,
        "fired_rules": fired_rules(sim),
        "fraud_allowed": missed(sim),
        "inconsistencies": problems,
        "cost": cost,
    }
    if candidate_rules:
        result["candidate_rules"] = candidate_rules
        pick = (lambda a: a.shadow_decision) if options.rules_as == "shadow" else None
        result["candidate"] = figures(sim.attempts, pick) if pick else live
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--customers", type=int, default=400, help="honest + fraud, headline")
    parser.add_argument("--fraud-share", type=float, default=0.2)
    parser.add_argument("--cost-submits", type=int, default=100, help="submits measured, both arms")
    parser.add_argument("--no-extras", action="store_true", help="leave out the extra personas")
    parser.add_argument("--rules", type=Path, help="a candidate rule set (JSON) to run as well")
    parser.add_argument("--rules-as", choices=["shadow", "live"], default="shadow")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "var" / "bench-risk.json")
    options = parser.parse_args()
    if options.customers < 20 or not 0 < options.fraud_share < 1:
        parser.error("--customers must be at least 20 and --fraud-share between 0 and 1")
    began = time.perf_counter()

    rng = Random(options.seed)
    workdir = Path(tempfile.mkdtemp(prefix="risk-bench-"))
    list_file = workdir / "ranges.txt"
    # The networks are drawn first, so the list file can be written before Django starts.
    networks = Networks(rng)
    list_file.write_text(networks.list_file_text())
    configure(workdir, list_file)
    create_database()
    try:
        result = run(options, rng, networks, began)
    finally:
        if not options.keep_db:
            drop_database()
        shutil.rmtree(workdir, ignore_errors=True)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(result, indent=2, default=str))
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "population",
                    "history_first_activations",
                    "fired_rules",
                    "fraud_allowed",
                    "inconsistencies",
                )
            },
            indent=2,
            default=str,
        )
    )
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
