"""Fixtures shared by every app's tests."""

import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from activation.core.simulator import SimulatorConfig, make_server
from verification.sms import LocmemBackend

from .factories import CustomerFactory, StaffFactory

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def require(available: bool, what: str) -> None:
    """Skip a test whose service is missing; in strict mode (CI) fail it instead."""
    if available:
        return
    if settings.TEST_STRICT:
        pytest.fail(f"{what} is required (TEST_STRICT=1) but not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture(autouse=True)
def _services_for_markers(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres"):
        require(connection.vendor == "postgresql", "PostgreSQL")
    if request.node.get_closest_marker("redis"):
        require(bool(settings.TEST_REDIS_URL), "Redis")
    if request.node.get_closest_marker("browser"):
        require(Path(CHROMIUM).exists(), "Debian's Chromium at /usr/bin/chromium")


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    """Rate-limit counters and the circuit breaker start fresh in every test."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def still_clock(time_machine) -> None:
    """Stop the clock for a test that counts requests against a rate limit.

    django-ratelimit counts in fixed windows; a test whose requests straddle the end of one
    would see its count start again halfway and fail by chance.
    """
    time_machine.move_to(timezone.now(), tick=False)


@pytest.fixture(autouse=True)
def _empty_sms_outbox() -> Iterator[None]:
    LocmemBackend.outbox.clear()
    yield
    LocmemBackend.outbox.clear()


def last_sms_code(to: str | None = None) -> str:
    """The code in the newest SMS the locmem backend holds (for ``to``, if given)."""
    messages = [m for m in LocmemBackend.outbox if to is None or m["to"] == to]
    assert messages, "no SMS was sent"
    return re.search(r"\b(\d{6})\b", messages[-1]["body"]).group(1)


@pytest.fixture
def customer(db):
    return CustomerFactory()


@pytest.fixture
def signed_in(client, customer):
    """The test client, signed in as ``customer``."""
    client.force_login(customer)
    return client


@pytest.fixture
def other_customer(db):
    return CustomerFactory()


@pytest.fixture
def agent(db):
    return StaffFactory(username="agent-ada", role="agent")


@pytest.fixture
def supervisor(db):
    return StaffFactory(username="supervisor-sam", role="supervisor")


@pytest.fixture
def other_supervisor(db):
    return StaffFactory(username="supervisor-sue", role="supervisor")


@pytest.fixture
def auditor(db):
    return StaffFactory(username="auditor-aud", role="auditor")


@pytest.fixture
def risk_analyst(db):
    return StaffFactory(username="risk-rui", role="risk_analyst")


class RunningSimulator:
    def __init__(self, url: str) -> None:
        self.url = url

    def configure(self, **knobs) -> None:
        httpx.post(f"{self.url}/_sim/config", json=knobs, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()


@pytest.fixture
def core_simulator(settings) -> Iterator[RunningSimulator]:
    """The simulator on a free loopback port, in a thread of this process; settings point at it."""
    server, _simulator = make_server(
        host="127.0.0.1",
        port=0,
        token=settings.CORE_API_TOKEN,
        webhook_secret=settings.CORE_WEBHOOK_SECRET,
        config=SimulatorConfig(timeout_seconds=2.0),
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    settings.CORE_API_URL = url
    try:
        yield RunningSimulator(url)
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def python() -> str:
    return sys.executable
